"""What the built-in speech corpus says: digit strings, times, dates and short commands, in English
and Mandarin, drawn from small grammars.

Why grammars and not a word list: a recogniser must learn words in context (a number inside a
time, a room inside a command), and a grammar gives thousands of distinct sentences over a
vocabulary of a few hundred words, so held-out sentences test more than memorised ones.

Every text is a function of a ``numpy.random.Generator``; English is lower case with single
spaces, Mandarin is hanzi without spaces. Each Mandarin word is one espeak-ng 1.52 reads with
tones and one the hanzi -> pinyin fallback table (``espeak.PINYIN``) holds, so both espeak paths
read the same words (a test checks the table covers every character here).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

LANGUAGES = ("en", "zh")
KINDS = ("digits", "time", "date", "command")

EN_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
EN_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
            "nineteen")
EN_TENS = ("twenty", "thirty", "forty", "fifty")
EN_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
             "november", "december")
EN_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
               "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
               "eighteenth", "nineteenth", "twentieth")
EN_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
EN_VERBS = ("turn on", "turn off", "open", "close", "stop", "start", "dim", "check")
EN_THINGS = ("the lights", "the radio", "the heater", "the fan", "the door", "the window", "the music",
             "the camera", "the oven", "the alarm")
EN_ROOMS = ("in the kitchen", "in the bedroom", "in the hall", "in the garage", "in the office", "")
EN_SHORT = ("yes", "no", "cancel", "pause", "play music", "volume up", "volume down", "go back", "next song",
            "call home", "what time is it", "how is the weather", "set an alarm", "take a photo")

ZH_DIGITS = ("零", "一", "二", "三", "四", "五", "六", "七", "八", "九")
ZH_DAYS = ("一", "二", "三", "四", "五", "六", "天")
ZH_VERBS = ("打开", "关闭", "开始", "停止")
ZH_THINGS = ("灯", "电视", "空调", "音乐", "窗户", "门", "风扇", "相机")
ZH_ROOMS = ("客厅的", "卧室的", "厨房的", "")
ZH_SHORT = ("你好", "谢谢", "再见", "确定", "取消", "暂停", "继续", "返回", "退出", "帮助", "静音", "拍照",
            "音量升高", "音量降低", "温度升高", "温度降低", "现在几点", "今天天气", "播放音乐", "下一首")


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def en_number(n: int) -> str:
    """0..59 in words ("forty five")."""
    if n < 10:
        return EN_DIGITS[n]
    if n < 20:
        return EN_TEENS[n - 10]
    tens, unit = divmod(n, 10)
    return EN_TENS[tens - 2] + ("" if unit == 0 else " " + EN_DIGITS[unit])


def en_ordinal(n: int) -> str:
    """1..31 as an ordinal ("twenty first")."""
    if n <= 20:
        return EN_ORDINALS[n - 1]
    if n == 30:
        return "thirtieth"
    return ("twenty " if n < 30 else "thirty ") + EN_ORDINALS[n % 10 - 1]


def zh_number(n: int) -> str:
    """0..99 read as a Mandarin number ("四十五", "十二", "二十")."""
    if n < 10:
        return ZH_DIGITS[n]
    tens, unit = divmod(n, 10)
    return ("" if tens == 1 else ZH_DIGITS[tens]) + "十" + ("" if unit == 0 else ZH_DIGITS[unit])


def _digits(rng, words, joiner) -> str:
    return joiner.join(_pick(rng, words) for _ in range(int(rng.integers(3, 7))))


def _en_time(rng) -> str:
    hour = int(rng.integers(1, 13))
    minute = _pick(rng, (0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, int(rng.integers(1, 60))))
    said = "o clock" if minute == 0 else ("oh " + EN_DIGITS[minute] if minute < 10 else en_number(minute))
    return " ".join(filter(None, (en_number(hour), said, _pick(rng, ("am", "pm", "")))))


def _en_date(rng) -> str:
    day, month = int(rng.integers(1, 29)), _pick(rng, EN_MONTHS)
    form = int(rng.integers(3))
    if form == 0:
        return f"{month} {en_ordinal(day)}"
    if form == 1:
        return f"the {en_ordinal(day)} of {month}"
    return f"{_pick(rng, EN_DAYS)} {month} {en_ordinal(day)}"


def _en_command(rng) -> str:
    if rng.random() < 0.3:
        return _pick(rng, EN_SHORT)
    if rng.random() < 0.2:
        return f"set an alarm for {_en_time(rng)}"
    return " ".join(filter(None, (_pick(rng, EN_VERBS), _pick(rng, EN_THINGS), _pick(rng, EN_ROOMS))))


def _zh_time(rng) -> str:
    hour = int(rng.integers(1, 13))
    minute = _pick(rng, (0, 10, 15, 20, 30, 40, 45, 50, int(rng.integers(1, 60))))
    said = "" if minute == 0 else ("零" + ZH_DIGITS[minute] if minute < 10 else zh_number(minute)) + "分"
    return _pick(rng, ("上午", "下午", "")) + ("两" if hour == 2 else zh_number(hour)) + "点" + said  # 两点, not 二点


def _zh_date(rng) -> str:
    if rng.random() < 0.3:
        return "星期" + _pick(rng, ZH_DAYS)
    return zh_number(int(rng.integers(1, 13))) + "月" + zh_number(int(rng.integers(1, 32))) + "号"


def _zh_command(rng) -> str:
    if rng.random() < 0.3:
        return _pick(rng, ZH_SHORT)
    if rng.random() < 0.2:
        return "请在" + _zh_time(rng) + "叫我"
    return _pick(rng, ("", "请")) + _pick(rng, ZH_VERBS) + _pick(rng, ZH_ROOMS) + _pick(rng, ZH_THINGS)


GRAMMARS: dict[tuple[str, str], Callable[[np.random.Generator], str]] = {
    ("en", "digits"): lambda rng: _digits(rng, EN_DIGITS, " "),
    ("en", "time"): _en_time,
    ("en", "date"): _en_date,
    ("en", "command"): _en_command,
    ("zh", "digits"): lambda rng: _digits(rng, ZH_DIGITS, ""),
    ("zh", "time"): _zh_time,
    ("zh", "date"): _zh_date,
    ("zh", "command"): _zh_command,
}


def sentence(rng: np.random.Generator, language: str, kind: str) -> str:
    """One text of ``kind`` in ``language`` (module docstring)."""
    return GRAMMARS[language, kind](rng)


def vocabulary(language: str) -> set[str]:
    """Every word (English) or character (Mandarin) the grammars can say, for tests and docs."""
    if language == "en":
        phrases = (EN_DIGITS + EN_TEENS + EN_TENS + EN_MONTHS + EN_ORDINALS + EN_DAYS + EN_VERBS + EN_THINGS
                   + EN_ROOMS + EN_SHORT + ("thirtieth", "o clock", "oh", "am", "pm", "the", "of", "set an alarm for"))
        return {w for p in phrases for w in p.split()}
    spoken = "十两点分上午下午月号星期请在叫我"
    chars = "".join(ZH_DIGITS + ZH_DAYS + ZH_VERBS + ZH_THINGS + ZH_ROOMS + ZH_SHORT) + spoken
    return set(chars)
