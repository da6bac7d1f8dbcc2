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
