"""Speech from espeak-ng, through ctypes, for the built-in ASR corpus.

Why a binding to the libespeak-ng of the espeakng-loader wheel and not the espeak-ng program:
a wheel installs with pip (no system package), ships its own voice data, and saves a process
start and a WAV round trip per utterance.

Why every call loads a fresh copy of the library: espeak keeps synthesis state in C statics that
``espeak_Terminate`` does not reset (the flutter phase, the noise generator, the wave phase), so
the second identical utterance of a process differs from the first in most samples. A freshly
loaded copy starts where a new process starts, which makes the samples a function of text,
voice and settings alone (a few ms a call). The copy is private to this module (a file in a
temporary folder), so another user of the wheel in the process (a phonemizer, say) neither
shares our engine nor keeps it from unloading.

Why one lock: espeak is one global engine per loaded library, not safe to drive from two threads.

Mandarin: espeak-ng 1.51 (Debian's) reads hanzi under ``cmn`` as English-spelled pinyin with the
tone digits spoken ("hen three hao three"); the 1.52 of this wheel reads them with Mandarin tones
(``X@214nX'Au214`` for 很好, the same syllables ``cmn-latn-pinyin`` gives for "hen3 hao3").
``mandarin_path`` measures which case holds, and ``synthesize_mandarin`` feeds hanzi to the first
and pinyin from a small built-in table to the second.
"""
from __future__ import annotations

import _ctypes
import atexit
import contextlib
import ctypes
import difflib
import functools
import os
import re
import shutil
import tempfile
import threading
import unicodedata
from typing import Iterator

import numpy as np

from jaxaudio.errors import ConfigError, JaxAudioError

# speak_lib.h (API revision 12)
_SYNCHRONOUS = 2            # AUDIO_OUTPUT_SYNCHRONOUS: espeak_Synth returns when all samples went to the callback
_DONT_EXIT = 0x8000         # espeakINITIALIZE_DONT_EXIT: return an error instead of calling exit()
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000          # a sentence pause after the text, as the espeak-ng program adds
_POS_CHARACTER = 1
_PHONEMES_IPA = 0x02
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7

MANDARIN_HANZI_VOICE = "cmn"
MANDARIN_PINYIN_VOICE = "cmn-latn-pinyin"
_SUGGESTED = ("en-us", "en-gb", "en-gb-scotland", "en-029", "cmn", "cmn-latn-pinyin", "m3", "f2", "klatt", "whisper")


class EspeakUnavailable(JaxAudioError, ImportError):
    """libespeak-ng or its voice data cannot be loaded (an ImportError too, so tests can skip on it)."""


class _Voice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_LOCK = threading.RLock()
_INSIDE: list[bool] = []  # an engine is loaded (by the thread holding _LOCK)
_CHUNKS: list[bytes] = []


@ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
def _collect(wav, n_samples, events):
    """espeak's synth callback: keep the 16-bit samples; 0 = go on."""
    if wav and n_samples > 0:
        _CHUNKS.append(ctypes.string_at(wav, 2 * n_samples))
    return 0


def _missing(problem: str) -> EspeakUnavailable:
    return EspeakUnavailable(f"espeak-ng speech synthesis needs libespeak-ng and its voice data from the "
                             f"espeakng-loader wheel: pip install espeakng-loader ({problem})")


@functools.cache
def _files() -> tuple[str, str, str]:
    """(the wheel's library, our private copy of it, the wheel's espeak-ng-data folder)."""
    try:
        import espeakng_loader
    except ImportError as err:
        raise _missing("the espeakng_loader package is not installed") from err
    library = espeakng_loader.get_library_path()
    try:
        data = espeakng_loader.get_data_path()
    except RuntimeError as err:
        raise _missing(str(err)) from err
    if not os.path.isfile(library):
        raise _missing(f"{library} does not exist")
    folder = tempfile.mkdtemp(prefix="jaxaudio-espeak-")
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))
    copy = os.path.join(folder, os.path.basename(library))
    shutil.copyfile(library, copy)
    return library, copy, data


def _declare(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None


def _dlopen(original: str, copy: str) -> tuple[str, int]:
    mode = os.RTLD_NOW | os.RTLD_LOCAL
    try:
        return copy, _ctypes.dlopen(copy, mode)
    except OSError:  # a temporary folder mounted noexec: share the wheel's file instead
        try:
            return original, _ctypes.dlopen(original, mode)
        except OSError as err:
            raise _missing(f"{original}: {err}") from err


@contextlib.contextmanager
def _engine() -> Iterator[tuple[ctypes.CDLL, int]]:
    """(a freshly loaded, initialised library, its sample rate), under the lock; unloaded after."""
    with _LOCK:
        if _INSIDE:  # a nested load would get the same handle, and unload the outer engine with it
            raise RuntimeError("jaxaudio.data.synth.espeak: an espeak engine is already loaded in this call")
        original, copy, data = _files()
        path, handle = _dlopen(original, copy)
        try:
            lib = ctypes.CDLL(path, handle=handle)
            _declare(lib)
            rate = lib.espeak_Initialize(_SYNCHRONOUS, 0, data.encode(), _DONT_EXIT)
            if rate <= 0:
                raise _missing(f"espeak_Initialize failed with code {rate} for the data in {data}")
            lib.espeak_SetSynthCallback(_collect)
            _INSIDE.append(True)
            try:
                yield lib, rate
            finally:
                _INSIDE.clear()
                lib.espeak_Terminate()
                _CHUNKS.clear()
        finally:
            lib = None
            _ctypes.dlclose(handle)


def version() -> str:
    """espeak-ng's version string (espeak_Info), e.g. "1.52.0"."""
    with _engine() as (lib, _):
        return lib.espeak_Info(None).decode()


def _has_dictionary(data: str, identifier: str) -> bool:
    """Whether the voice's dictionary is in the data: the wheel lists voices (fo, kaa, xex) whose
    ``*_dict`` it lacks, and espeak then speaks silence without an error."""
    dictionary = None
    for folder in ("lang", "voices"):
        try:
            with open(os.path.join(data, folder, identifier), encoding="latin-1") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for words in (line.split() for line in lines):
            if len(words) >= 2 and words[0] == "language" and dictionary is None:
                dictionary = words[1].split("-")[0]  # the first language names the default dictionary
            elif len(words) >= 2 and words[0] == "dictionary":
                dictionary = words[1]
        break
    return dictionary is None or os.path.isfile(os.path.join(data, f"{dictionary}_dict"))


def _languages(voice: _Voice) -> list[tuple[int, str]]:
    """(priority, language) pairs of espeak's packed list: a priority byte, a NUL-ended name, ..., 0."""
    pairs, at = [], voice.languages
    while at and ctypes.string_at(at, 1)[0] != 0:
        name = ctypes.string_at(at + 1)
        pairs.append((ctypes.string_at(at, 1)[0], name.decode("utf-8", "replace").lower()))
        at += len(name) + 2
    return pairs


@functools.cache
def _voice_table() -> dict[str, str]:
    """voice name -> espeak identifier: each voice file's name, lower case ("en-us" -> "gmw/en-US"), and
    each language a voice lists that is no file's name, for the voice that prefers it most ("en-gb" ->
    "gmw/en"; none where two tie, as cmn and cmn-latn-pinyin for "zh")."""
    voices = []
    with _engine() as (lib, _):
        listed = lib.espeak_ListVoices(None)  # all but the variants and the mbrola voices
        i = 0
        while listed[i]:
            voices.append((listed[i].contents.identifier.decode(), _languages(listed[i].contents)))
            i += 1
    data = _files()[2]
    voices = [(ident, langs) for ident, langs in voices if _has_dictionary(data, ident)]
    table = {ident.rsplit("/", 1)[-1].lower(): ident for ident, _ in voices}
    by_language: dict[str, list[tuple[int, str]]] = {}
    for ident, langs in voices:
        for priority, language in langs:
            by_language.setdefault(language, []).append((priority, ident))
    for language, candidates in by_language.items():
        candidates.sort()
        if language not in table and (len(candidates) == 1 or candidates[0][0] < candidates[1][0]):
            table[language] = candidates[0][1]
    return table


@functools.cache
def _variant_table() -> dict[str, str]:
    folder = os.path.join(_files()[2], "voices", "!v")
    return {name.lower(): name for name in os.listdir(folder) if os.path.isfile(os.path.join(folder, name))}


def list_voices() -> list[str]:
    """The voice names espeak's data holds: its voice files ("en-us", "cmn", "cmn-latn-pinyin", ...) and
    the languages they name ("en-gb")."""
    return sorted(_voice_table())


def list_variants() -> list[str]:
    """The variants (espeak-ng-data/voices/!v) that may follow a voice after '+': "f2", "m3", "klatt", ..."""
    return sorted(_variant_table().values())


def _unknown(kind: str, name: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name.lower(), [k.lower() for k in known], n=4, cutoff=0.6)
    lower = {k.lower(): k for k in known}
    some = [lower[c] for c in close] + [s for s in _SUGGESTED if s in known and s not in close]
    return ConfigError(f"espeak {kind} {name!r} does not exist; some that do: {', '.join(some[:8])} "
                       f"(list_{kind}s() gives all {len(known)})")


def resolve_voice(voice: str) -> str:
    """The identifier espeak selects for "name[+variant]" ("gmw/en-US+f2"), or a ConfigError naming
    the unknown part (espeak itself falls back to some other voice without a word)."""
    if not isinstance(voice, str) or not voice.strip():
        raise ConfigError(f"espeak voice must be a name such as 'en-us' or 'en-us+f2', got {voice!r}")
    name, _, variant = voice.strip().partition("+")
    identifier = _voice_table().get(name.lower())
    if identifier is None:
        raise _unknown("voice", name, list_voices())
    if not variant:
        return identifier
    real = _variant_table().get(variant.lower())
    if real is None:
        raise _unknown("variant", variant, list_variants())
    return f"{identifier}+{real}"


def _select(lib: ctypes.CDLL, voice: str, spec: str) -> None:
    status = lib.espeak_SetVoiceByName(spec.encode())
    if status != 0:
        raise ConfigError(f"espeak voice {voice!r} ({spec}) could not be loaded (espeak error {status})")


def _setting(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not lo <= value <= hi:
        raise ConfigError(f"espeak {name} must be a number in [{lo}, {hi}], got {value!r}")
    return int(round(value))


def synthesize(text: str, voice: str, *, speed_wpm: float = 175, pitch: float = 50, pitch_range: float = 50,
               amplitude: float = 100, gap_ms: float = 0, seed: int = 0) -> tuple[np.ndarray, int]:
    """(float32 waveform in [-1, 1), sample rate) for `text` spoken by `voice` ("en-us", "en-gb+m3",
    "cmn-latn-pinyin+f2", ...), at espeak's own rate (22050 Hz; resampling is the caller's).

    speed_wpm: words per minute, 80-450; pitch and pitch_range: 0-100 (50 = the voice's own);
    amplitude: 0-200; gap_ms: extra pause between words, in espeak's 10 ms steps (at 175 wpm);
    seed: espeak's noise generator (the breath of the f* and whisper variants), which espeak
    itself seeds from the clock. Equal arguments give byte-identical samples, in one process or
    across processes.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"espeak text must be a non-empty string, got {text!r}")
    params = [(_RATE, _setting("speed_wpm", speed_wpm, 80, 450)), (_PITCH, _setting("pitch", pitch, 0, 100)),
              (_RANGE, _setting("pitch_range", pitch_range, 0, 100)),
              (_VOLUME, _setting("amplitude", amplitude, 0, 200)),
              (_WORDGAP, int(round(_setting("gap_ms", gap_ms, 0, 10000) / 10)))]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 31:
        raise ConfigError(f"espeak seed must be an integer in [0, 2**31), got {seed!r}")
    encoded = text.encode("utf-8")
    spec = resolve_voice(voice)  # before the engine: the first call lists the voices with an engine of its own
    with _engine() as (lib, rate):
        _select(lib, voice, spec)
        for param, value in params:
            lib.espeak_SetParameter(param, value, 0)
        lib.espeak_ng_SetRandSeed(int(seed))  # after the voice: espeak seeds from time() on the way
        status = lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE,
                                  None, None)
        pcm = b"".join(_CHUNKS)
    if status != 0:
        raise JaxAudioError(f"espeak_Synth failed with code {status} for {text!r} in voice {voice!r}")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / np.float32(32768.0), rate


def _to_phonemes(lib: ctypes.CDLL, text: str, ipa: bool) -> str:
    buffer = ctypes.create_string_buffer(text.encode("utf-8"))
    pointer = ctypes.c_void_p(ctypes.addressof(buffer))
    clauses = []
    while pointer.value:  # one clause a call; espeak moves the pointer on, to NULL at the end
        out = lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA if ipa else 0)
        clauses.append((out or b"").decode("utf-8", "replace"))
    return " ".join(c for c in clauses if c)


def phonemes_many(texts: list[str], voice: str, *, ipa: bool = False) -> list[str]:
    """``phonemes`` of several texts in one engine load."""
    spec = resolve_voice(voice)
    with _engine() as (lib, _):
        _select(lib, voice, spec)
        return [_to_phonemes(lib, t, ipa) for t in texts]


def phonemes(text: str, voice: str, *, ipa: bool = False) -> str:
    """What espeak will say, as its phoneme mnemonics (IPA with ipa=True): how to check that a voice
    reads a text the way we think ("X'@214n" is hen with tone 3, "Tr'i:" an English "three")."""
    return phonemes_many([text], voice, ipa=ipa)[0]


def syllables(phoneme_string: str) -> str:
    """Phonemes without stress marks, pauses and word boundaries, to compare two readings."""
    return re.sub(r"[',_| ]", "", phoneme_string)


@functools.cache
def mandarin_path() -> str:
    """"hanzi" when espeak's ``cmn`` reads 很好 with the tones ``cmn-latn-pinyin`` gives "hen3 hao3"
    (espeak-ng 1.52), "pinyin" when it reads them otherwise (1.51: "hen three hao three")."""
    (hanzi,) = phonemes_many(["很好"], MANDARIN_HANZI_VOICE)
    (pinyin,) = phonemes_many(["hen3 hao3"], MANDARIN_PINYIN_VOICE)
    return "hanzi" if syllables(hanzi) == syllables(pinyin) else "pinyin"


# Citation tones (no tone sandhi, which espeak does not apply to hanzi either); ü as v; 5 = neutral tone.
PINYIN: dict[str, str] = {
    # digits and what numbers are read with
    "零": "ling2", "一": "yi1", "二": "er4", "三": "san1", "四": "si4", "五": "wu3", "六": "liu4", "七": "qi1",
    "八": "ba1", "九": "jiu3", "十": "shi2", "百": "bai3", "千": "qian1", "点": "dian3",
    # command words (words, not characters, where a character has several readings: 乐 in 音乐, 调 in 空调)
    "打开": "da3 kai1", "关闭": "guan1 bi4", "开始": "kai1 shi3", "停止": "ting2 zhi3", "暂停": "zan4 ting2",
    "继续": "ji4 xu4", "退出": "tui4 chu1", "返回": "fan3 hui2", "取消": "qu3 xiao1", "确定": "que4 ding4",
    "确认": "que4 ren4", "上": "shang4", "下": "xia4", "左": "zuo3", "右": "you4", "前进": "qian2 jin4",
    "后退": "hou4 tui4", "是": "shi4", "不": "bu4", "好": "hao3", "很": "hen3", "对": "dui4", "大": "da4",
    "小": "xiao3", "灯": "deng1", "音乐": "yin1 yue4", "音量": "yin1 liang4", "静音": "jing4 yin1",
    "电视": "dian4 shi4", "空调": "kong1 tiao2", "电话": "dian4 hua4", "播放": "bo1 fang4", "首": "shou3",
    "你好": "ni3 hao3", "谢谢": "xie4 xie5", "再见": "zai4 jian4", "帮助": "bang1 zhu4", "唤醒": "huan4 xing3",
    "温度": "wen1 du4", "升高": "sheng1 gao1", "降低": "jiang4 di1", "现在": "xian4 zai4", "几": "ji3",
    "时间": "shi2 jian1", "天气": "tian1 qi4", "拍照": "pai1 zhao4", "我": "wo3", "要": "yao4", "请": "qing3",
    # times, dates and rooms of the built-in corpus (speech_texts.py)
    "两": "liang3", "分": "fen1", "上午": "shang4 wu3", "下午": "xia4 wu3", "月": "yue4", "号": "hao4",
    "星期": "xing1 qi1", "天": "tian1", "今天": "jin1 tian1", "在": "zai4", "叫": "jiao4", "客厅": "ke4 ting1",
    "卧室": "wo4 shi4", "厨房": "chu2 fang2", "的": "de5", "窗户": "chuang1 hu5", "门": "men2",
    "风扇": "feng1 shan4", "相机": "xiang4 ji1", "下一首": "xia4 yi4 shou3",
}
_PUNCTUATION = {"，": ",", "、": ",", "。": ".", "？": "?", "！": "!", "；": ";", "：": ":"}
_LONGEST = max(map(len, PINYIN))


def _is_pause(char: str) -> bool:
    return unicodedata.category(char)[0] in "PZ" or char in "\t\n\r"


def _describe(chars) -> str:
    return ", ".join(f"{c!r} (U+{ord(c):04X})" for c in dict.fromkeys(chars))


def to_pinyin(hanzi: str) -> str:
    """Tone-numbered pinyin ("san1 dian3 wu3") for text made of the built-in table's words, read
    longest word first; a ConfigError names every character outside the table."""
    out, unknown, i = [], [], 0
    while i < len(hanzi):
        char = hanzi[i]
        if _is_pause(char):
            out.append(_PUNCTUATION.get(char, char if char in ",.?!;:" else " "))
            i += 1
            continue
        word = next((hanzi[i:i + n] for n in range(min(_LONGEST, len(hanzi) - i), 0, -1)
                     if hanzi[i:i + n] in PINYIN), None)
        if word is None:
            unknown.append(char)
            i += 1
        else:
            out.append(" " + PINYIN[word] + " ")
            i += len(word)
    if unknown:
        raise ConfigError(f"hanzi {_describe(unknown)} in {hanzi!r} not in the built-in hanzi->pinyin table "
                          f"(add them, or give espeak the pinyin); it holds: {' '.join(PINYIN)}")
    text = re.sub(r"\s+", " ", "".join(out))
    return re.sub(r" ([,.?!;:])", r"\1", text).strip()


_READABLE: dict[str, bool] = {}


def _check_readable(hanzi: str) -> None:
    """Each character a pause or one Mandarin syllable: espeak reads a hanzi missing from its
    dictionary as its code point's digits, and Latin letters in English."""
    chars = [c for c in dict.fromkeys(hanzi) if not _is_pause(c) and c not in _READABLE]
    if chars:
        for char, ph in zip(chars, phonemes_many(chars, MANDARIN_HANZI_VOICE)):
            _READABLE[char] = "(" not in ph and len(re.findall(r"\d+", ph)) == 1
    bad = [c for c in hanzi if not _is_pause(c) and not _READABLE[c]]
    if bad:
        raise ConfigError(f"espeak's Mandarin dictionary cannot read {_describe(bad)} in {hanzi!r} "
                          "as Mandarin syllables (write hanzi)")


def mandarin_input(hanzi: str, variant: str = "", *, path: str | None = None) -> tuple[str, str]:
    """(text, voice) that ``synthesize_mandarin`` gives espeak: the hanzi and ``cmn``, or their pinyin
    from the built-in table and ``cmn-latn-pinyin`` (path: "hanzi" / "pinyin"; default
    ``mandarin_path()``)."""
    if not isinstance(hanzi, str) or not hanzi.strip():
        raise ConfigError(f"Mandarin text must be a non-empty string of hanzi, got {hanzi!r}")
    path = mandarin_path() if path is None else path
    suffix = f"+{variant}" if variant else ""
    if path == "hanzi":
        _check_readable(hanzi)
        return hanzi, MANDARIN_HANZI_VOICE + suffix
    if path == "pinyin":
        return to_pinyin(hanzi), MANDARIN_PINYIN_VOICE + suffix
    raise ConfigError(f"Mandarin path must be 'hanzi' or 'pinyin', got {path!r}")


def synthesize_mandarin(hanzi: str, variant: str = "", *, path: str | None = None,
                        **settings) -> tuple[np.ndarray, int]:
    """``synthesize`` for Mandarin hanzi (digits: 三点五), read with tones whatever the espeak
    version (``mandarin_input``); variant: "f2", "m3", ...; settings as for ``synthesize``."""
    text, voice = mandarin_input(hanzi, variant, path=path)
    return synthesize(text, voice, **settings)
