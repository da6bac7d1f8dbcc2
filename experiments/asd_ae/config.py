"""The DCASE2020 task-2 autoencoder baseline: one dense autoencoder per machine type on 5-frame log-mel context.

    python experiments/run.py --exp=asd_ae                     # tiny: built-in machine-sound set, 2 CPU cores
    python experiments/run.py --exp=asd_ae --preset=paper --data_dir=/path/to/dcase2020_task2   # dev_data/<type>/...

One stage, ``train``: every machine type's autoencoder trains on its own type's normal clips (they
train together on mixed batches, each autoencoder's MSE and BatchNorm statistics over its own rows
only: ``jaxaudio/models/asd_ae_bank.py``); then AUC / pAUC per machine ID on the test clips, a clip's
score being the mean reconstruction error over its context vectors.

Sources: y-kawagu/dcase2020_task2_baseline at its final commit (``baseline.yaml``, ``keras_model.py``,
``common.py``, ``00_train.py``, ``01_test.py``), as summarised and cited in ``jaxaudio/models/asd_ae.py``;
values it does not fix are marked "our choice".

**Batches of clips, not of vectors.** The baseline shuffles one machine type's vectors (309 per 10-s
clip) and takes 512 at a time; here a training batch is ``batch.train`` clips of every type mixed, and
each autoencoder trains on all context vectors of its own type's clips in the batch. ``paper``:
10 clips x 309 vectors / 6 machine types = 515 vectors per autoencoder per step on average, the
baseline's 512 (baseline.yaml fit.batch_size), varying with the batch's mix of types. One epoch (every
training clip once) is ceil(clips / batch.train) steps; 100 epochs of DCASE2020's dev_data (20,119
training clips over 6 types) at 10 clips are 100 x 2,012 = 201,200 steps (baseline.yaml fit.epochs).
"""
import ml_collections

from experiments.asd import data as asd_run_data

from jaxaudio.models.asd_ae import DCASE2020_T2_FRONTEND, PAPER

PRESETS = ("smoke", "tiny", "paper")
STAGE = "train"
DCASE2020_DEV_TRAIN_CLIPS = 20_119  # dev_data train normals: ToyCar 4000, ToyConveyor 3000, fan 3675, pump 3349,
#                                     slider 2804, valve 3291 (DCASE2020 task 2 development set)


def epoch_steps(clips: int, batch: int) -> int:
    """Steps for every training clip once (the last, partial batch counted whole)."""
    return -(-int(clips) // int(batch))


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = asd_run_data.data_config(preset)   # experiments/asd/data.py: DCASE2020 task 2, or the built-in set

    fe = DCASE2020_T2_FRONTEND        # librosa 0.6 melspectrogram, 10 log10(mel + eps) (common.py)
    c.frontend = ml_collections.ConfigDict(
        {"n_mels": fe.n_mels,          # 128 (baseline.yaml feature.n_mels)
         "n_fft": fe.n_fft,            # 1024 (baseline.yaml feature.n_fft)
         "win_length": fe.win_length,  # = n_fft (librosa default)
         "hop_length": fe.hop_length,  # 512 (baseline.yaml feature.hop_length)
         # raw dB, as the baseline feeds its network (common.file_to_vector_array): (dB - 0) / 1
         "norm_mean": 0.0, "norm_std": 1.0})

    c.model = ml_collections.ConfigDict()
    c.model.frames = PAPER.frames              # 5 (baseline.yaml feature.frames)
    c.model.hidden = PAPER.hidden              # 128 (keras_model.py)
    c.model.depth = PAPER.depth                # 4 Dense-BatchNorm-ReLU layers each side (keras_model.py)
    c.model.bottleneck = PAPER.bottleneck      # 8 (keras_model.py)
    c.model.bn_momentum = PAPER.bn_momentum    # 0.99 (Keras BatchNormalization default)
    c.model.bn_epsilon = PAPER.bn_epsilon      # 1e-3 (Keras BatchNormalization default)

    c.batch = ml_collections.ConfigDict()
    c.batch.train = 10                 # clips: ~515 vectors per machine type's AE per step (see above)
    c.batch.eval = 32                  # clips scored per batch (scores do not depend on it)

    c.stages = ml_collections.ConfigDict()
    s = c.stages[STAGE] = ml_collections.ConfigDict()
    fit = PAPER.fit
    # 100 epochs (baseline.yaml fit.epochs) of dev_data's 20,119 clips at 10 a step: 100 x 2,012 = 201,200.
    # (Set --config.stages.train.steps for another data set or batch: epochs x ceil(clips / batch.train).)
    s.steps = fit.epochs * epoch_steps(DCASE2020_DEV_TRAIN_CLIPS, c.batch.train)
    s.lr = fit.learning_rate           # 1e-3 (Keras Adam default; baseline.yaml fit.compile.optimizer adam)
    s.b1, s.b2 = fit.beta1, fit.beta2  # 0.9, 0.999 (Keras Adam defaults)
    s.eps = fit.eps                    # 1e-7 (Keras K.epsilon(); optax's default is 1e-8)
    s.weight_decay = 0.0               # none in the baseline
    s.schedule = {"kind": "constant"}  # Keras fit: a constant learning rate
    s.clip_norm = None                 # none in the baseline
    s.log_every = 500
    s.eval_every = 0                   # 0: the test clips are scored once, at the end (nothing is selected)
    s.checkpoint_every = 5000
    s.keep = 2

    c.eval = ml_collections.ConfigDict()
    c.eval.max_fpr = 0.1               # baseline.yaml max_fpr
    c.eval.primary_metric = "auc"
    c.eval.validation_split = "test"   # no split is held out in DCASE2020 dev: nothing is selected on it

    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.sharding = ml_collections.ConfigDict({"rules": ()})

    if preset in ("tiny", "smoke"):
        # GeCo's tiny data (6 types x 3 IDs x 60 training clips of 4 s: 126 frames, 122 vectors per clip) and
        # 64 mels (the 320-d input of spec/papers.md §3 and the baseline's first upload). dB scaled to about zero
        # mean and unit variance (our choice: the built-in set's log-mel is -24 dB +- 14 dB; from raw dB the
        # output layer's bias alone needs ~24k Adam steps at lr 1e-3 to reach the mean; tiny has 1,350).
        c.frontend.n_mels = 64
        c.frontend.norm_mean, c.frontend.norm_std = -25.0, 15.0
        # 24 clips x 122 vectors / 6 types = 488 vectors per AE per step (the baseline's 512);
        # 1,080 clips / 24 = 45 steps an epoch; 30 epochs (our choice: 2 CPU cores in a few minutes).
        c.batch.train, c.batch.eval = 24, 48
        s.steps = 30 * epoch_steps(1080, c.batch.train)   # 1,350
        s.log_every, s.checkpoint_every = 45, 450
    if preset == "smoke":
        # Seconds, for tests: 2 machine types x 2 IDs x 6 clips of 2 s (63 frames, 59 vectors). Our choices, so that
        # 24 test clips show what the AE learned: the paper's AE sizes; every training clip in each batch (24, so
        # each AE sees all 708 of its type's vectors a step); 150 steps at lr 5e-3; BatchNorm momentum 0.9, so the
        # running averages that scoring uses settle within the run (0.99 needs several hundred steps). Seeds 0-3
        # reach a mean AUC of 0.67-0.69 against the untrained network's 0.56 (which scores distance from -25 dB).
        c.model.bn_momentum = 0.9
        c.batch.train, c.batch.eval = 24, 8
        s.steps = 150 * epoch_steps(24, c.batch.train)     # 150 epochs of 24 clips: 150 steps
        s.lr = 5e-3
        s.log_every, s.checkpoint_every = 25, 150
    return c
