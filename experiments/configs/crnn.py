"""DCASE task-4 CRNN baseline trained with mean teacher on DESED-layout data.

    python experiments/run.py --exp=crnn                    # tiny: built-in synthetic set, 2 CPU cores
    python experiments/run.py --exp=crnn --preset=paper     # DCASE 2022/2023 baseline sizes
    python experiments/run.py --exp=crnn --data_dir=/path/to/DESED

Paper preset values follow the DCASE task-4 baseline (DESED_task recipe): 16 kHz, 128 mels,
n_fft 2048, hop 256, 7 CNN blocks with gated linear units, 2-layer BiGRU (128), mean teacher with
EMA 0.999 and a consistency weight ramped up over the first 50 epochs.
"""
import ml_collections

from experiments.configs.desed_data import desed_data

PRESETS = ("tiny", "paper")


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = desed_data(16000)

    c.frontend = ml_collections.ConfigDict()
    c.frontend.preset = "DCASE_16K"
    c.frontend.n_mels = 128
    c.frontend.n_fft = 2048           # the DFT-matmul front end costs frames * n_fft * n_fft / 2
    c.frontend.hop_length = 256

    c.model = ml_collections.ConfigDict()
    c.model.channels = (16, 32, 64, 128, 128, 128, 128)
    c.model.pooling = ((2, 2), (2, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2))
    c.model.activation = "glu"
    c.model.dropout = 0.5
    c.model.rnn_hidden = 128
    c.model.rnn_layers = 2

    c.batch = ml_collections.ConfigDict()
    c.batch.strong = 12
    c.batch.weak = 12
    c.batch.unlabeled = 24
    c.batch.eval = 32

    c.train = ml_collections.ConfigDict()
    c.train.steps = 20000
    c.train.lr = 1e-3
    c.train.warmup_steps = 1000
    c.train.clip_norm = 5.0
    c.train.ema_decay = 0.999
    c.train.consistency_max = 2.0
    c.train.consistency_rampup_steps = 10000
    c.train.log_every = 50
    c.train.eval_every = 2000
    c.train.checkpoint_every = 500
    c.train.keep = 3
    c.train.mixup_prob = 0.5
    c.train.frame_shift_sigma = 20.0
    c.train.filter_augment = True

    c.eval = ml_collections.ConfigDict()
    c.eval.median_window = 7
    c.eval.max_clips = 0              # 0: all clips of the subset

    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})

    if preset == "tiny":
        # Sized for 2 CPU cores in about 10 minutes: 64 mels, hop 512 (78 output frames of
        # 128 ms), a narrower CNN with ReLU (GLU with PyTorch's uniform init learned ~4x slower
        # per step in our trials), light dropout, and a batch weighted towards strong labels.
        c.frontend.n_mels = 64
        c.frontend.n_fft = 512        # 16x cheaper STFT on CPU; 31 Hz bins still resolve 64 mels
        c.frontend.hop_length = 512
        c.model.channels = (16, 32, 64, 64, 64, 64)
        c.model.pooling = ((2, 2), (2, 2), (1, 2), (1, 2), (1, 2), (1, 2))
        c.model.activation = "relu"
        c.model.dropout = 0.1
        c.model.rnn_hidden = 64
        c.batch.strong, c.batch.weak, c.batch.unlabeled, c.batch.eval = 12, 4, 4, 16
        c.train.steps = 1200
        c.train.lr = 5e-3
        c.train.warmup_steps = 50
        c.train.consistency_rampup_steps = 600
        c.train.eval_every = 0
        c.train.checkpoint_every = 200
        c.train.ema_decay = 0.99
    return c
