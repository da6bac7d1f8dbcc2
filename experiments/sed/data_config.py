"""The data section shared by the SED experiments: DESED-layout subsets, or the built-in set."""
import ml_collections


def desed_data(sample_rate: int) -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.data_dir = ""              # empty: the built-in synthetic set under synth_dir (--data_dir sets it)
    d.synth_dir = "data/desed_synth"
    d.synth_preset = "default"
    # The event classes; empty: the data folder's metadata/classes.txt if it has one (a set made from
    # your own sound banks), else DESED's ten. run.py writes the resolved list into config.json.
    d.classes = ()
    d.sample_rate = sample_rate
    d.clip_seconds = 10.0
    d.train_strong = "synthetic_train"
    # The AudioSet-strong clips (DESED layout: audio/train/strong_label_real, metadata/train/audioset_strong.tsv;
    # the built-in set has a stand-in with other recording conditions): "strong_real", or "" for none.
    # batch.strong_real / batch.pretrain_strong_real say how many of the strong rows come from it.
    d.train_strong_real = ""
    d.train_weak = "weak"
    d.train_unlabeled = "unlabeled"
    d.validation = "validation"
    d.test = "eval"
    d.cache_audio = True
    d.prepared_dir = ""          # ArrayRecord shards from `python -m jaxaudio.data.prepare` (read instead of wavs)
    return d


def sed_eval(median_window: int) -> ml_collections.ConfigDict:
    """What the SED evaluators score: the validation split (during training, for the best
    checkpoint) and every split of ``splits``, after a class-wise median filter."""
    e = ml_collections.ConfigDict()
    e.validation_split = "validation"   # a subset name of config.data (validation / test)
    e.splits = ("validation", "eval")
    e.primary_metric = "psds1"
    e.median_window = median_window     # frames: one length for all classes, or one per class
    e.max_clips = 0                     # export verification: 0 = every clip of the split
    return e


def reference_sed_eval(frame_rate: float = 100.0) -> ml_collections.ConfigDict:
    """Transformer4SED's post-processing (PMAM and MAT-SED presets; sed_recipes.md rows 2, 3, 19):
    class-wise median windows [5,20,5,5,5,20,20,20,5,20] x pred_len / 156 output frames at 1000
    frames per 10 s (ref recipes/desed/finetune/train.py:221-226), i.e. w / 15.6 seconds, here at
    ``frame_rate`` output frames per second; strong scores times the pooled clip probability (the
    weak soft mask, ref src/codec/decoder.py:71-80, weak_mask: True) and sigmoid(logits / 0.5) at
    inference (ref finetune1.yaml:104, val_kwargs temp_w)."""
    e = sed_eval(median_window=tuple(int(w * frame_rate / 15.6) for w in (5, 20, 5, 5, 5, 20, 20, 20, 5, 20)))
    e.weak_mask = True
    e.temperature = 0.5
    return e


def tiny_vit_front_end(c) -> None:
    """The PaSST-style systems' tiny front end and encoder: 16 kHz, 64 mels at 25 frames/s (hop
    640) -> 250 output frames (40 ms), a plain ViT trained from scratch (so no PaSST weights are
    needed), global-local fusion off (at 25 frames/s the paper's windows are 12-17 encoder
    passes per clip, which would double a 2-core run), no mel-bank jitter (fmax is Nyquist here)."""
    c.data.sample_rate = 16000
    c.frontend.sample_rate = 16000
    c.frontend.n_mels = 64
    c.frontend.n_fft = 1024
    c.frontend.win_length = 1024
    c.frontend.hop_length = 640
    c.frontend.fmax = 8000.0
    c.frontend.fmin_aug_range = 1
    c.frontend.fmax_aug_range = 1
    c.model.n_mels = 64
    c.model.frames = 250
    c.model.vit = "plain"
    c.model.allow_random_init = True
    c.model.global_local.window = 0
