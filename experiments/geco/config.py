"""GeCo: anomalous sound detection by joint generative and contrastive learning (DCASE2020 task 2).

    python experiments/run.py --exp=geco                     # tiny: built-in machine-sound set, 2 CPU cores
    python experiments/run.py --exp=geco --data_dir=/path/to/dcase2020_task2   # dev_data/<type>/{train,test}
    python experiments/run.py --exp=geco --config.geco.reconstructions=False    # the ID-classifier baseline

Stages (each resumes by itself from ``workdir/<stage>/``): ``pae`` (one self-attention predictive
autoencoder per machine type, each on its own type's normal clips: they train together, every
PAE's loss over its own rows only) and ``extractor`` (the STgram-style network on normal segments
and their PAE reconstructions: cross-entropy over machine IDs + supervised contrastive loss with
originals and reconstructions of an ID as separate classes + a real-vs-reconstruction BCE), then
AUC / pAUC per machine ID on the test clips, the score being -log p(ID) averaged over segments.

Sources: ``spec/papers.md`` §3. GeCo (arXiv 2305.12111) states its losses and the PAE's role, not
its sizes or weights; every value it leaves open is marked "our choice". The extractor is
STgram-MFN's (``jaxaudio/models/geco.py``), whose published values are cited as "STgram-MFN".
"""
import ml_collections

from experiments.asd import data as asd_run_data

from jaxaudio.models import geco as geco_model

PRESETS = ("smoke", "tiny", "paper")


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = asd_run_data.data_config(preset)   # experiments/asd/data.py: DCASE2020 task 2, or the built-in set

    # log-mel: torchaudio MelSpectrogram n_fft = win 1024, hop 512, 128 HTK mels, power 2, dB (STgram-MFN)
    fe = geco_model.STGRAM_FRONTEND
    c.frontend = ml_collections.ConfigDict(
        {"n_mels": fe.n_mels, "n_fft": fe.n_fft, "win_length": fe.win_length, "hop_length": fe.hop_length,
         # dB / 20 (our choice): the PAE's targets become O(1) (the built-in set: std 14 dB); the
         # extractor's first BatchNorm makes it indifferent to the scale.
         "norm_mean": 0.0, "norm_std": 20.0})

    c.model = ml_collections.ConfigDict()
    net = geco_model.GECO_STGRAM
    c.model.frames = net.frames                  # 313 = one 10-s clip per segment (STgram-MFN)
    c.model.segment_hop = 0                      # 0 = frames (no overlap; our choice)
    c.model.wave_branch = net.wave_branch        # the Tgram channel (STgram-MFN)
    c.model.stem_channels = net.stem_channels
    c.model.bottlenecks = net.bottlenecks
    c.model.conv_channels = net.conv_channels
    c.model.embedding_dim = net.embedding_dim
    c.model.head = net.head                      # ArcFace m 0.7, s 30 (STgram-MFN config.yaml)
    c.model.arc_margin = net.arc_margin
    c.model.arc_scale = net.arc_scale
    c.model.recon_wave = net.recon_wave          # what the Tgram sees for a reconstruction (our choice)
    # The PAE (our choice throughout; GeCo gives no sizes): IDNN's 2 frames each side, 2 blocks.
    c.model.pae = ml_collections.ConfigDict(
        {"context": 2, "dim": 128, "layers": 2, "heads": 4, "mlp_ratio": 2.0})

    c.geco = ml_collections.ConfigDict()
    # False: the ID classifier alone (no PAE, no contrastive term, no recon head): the baseline.
    c.geco.reconstructions = True
    c.geco.ce_weight = 1.0             # our choice
    c.geco.supcon_weight = 1.0         # our choice
    c.geco.recon_weight = 1.0          # our choice (the real-vs-reconstruction BCE)
    c.geco.temperature = 0.07          # SupCon's default (Khosla et al. 2020); our choice for GeCo
    # Reconstructions also carry their ID in the cross-entropy? Our choice: no, only originals, so
    # p(ID) stays a statement about real machine sounds and the contrastive term alone places them.
    c.geco.ce_on_reconstructions = False

    c.batch = ml_collections.ConfigDict()
    c.batch.train = 128                # STgram-MFN
    c.batch.eval = 32

    c.stages = ml_collections.ConfigDict()
    p = c.stages.pae = ml_collections.ConfigDict()
    p.steps = 20000                    # our choice
    p.lr = 1e-3                        # our choice
    p.weight_decay = 0.0
    p.schedule = {"kind": "warmup_exp_down", "warmup_steps": 500, "decay_start_step": 10000, "exponent": -1.0}
    p.frames = 64                      # frames per PAE training crop (our choice)
    x = c.stages.extractor = ml_collections.ConfigDict()
    x.steps = 30000                    # STgram-MFN: 500 epochs of 41 IDs' ~ 7k clips / 128 ~ 27k steps
    x.lr = 1e-4                        # STgram-MFN (Adam lr 1e-4, weight decay 1e-6)
    x.weight_decay = 1e-6
    x.schedule = {"kind": "warmup_exp_down", "warmup_steps": 500, "decay_start_step": 15000, "exponent": -1.0}
    for s in (p, x):
        s.clip_norm = 10.0             # a guard that rarely binds (our choice)
        s.log_every = 100
        s.checkpoint_every = 1000
        s.keep = 2

    c.eval = ml_collections.ConfigDict()
    c.eval.max_fpr = 0.1               # DCASE2020 task 2 (baseline.yaml max_fpr)
    c.eval.primary_metric = "auc"
    c.eval.validation_split = "test"   # no split is held out in DCASE2020 dev: nothing is selected on it

    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.sharding = ml_collections.ConfigDict({"rules": ()})

    if preset in ("tiny", "smoke"):
        # 2 CPU cores in well under 25 minutes: the built-in set's tiny preset (6 types x 3 IDs,
        # 4-s clips), 64 mels at hop 512 (126 frames per clip), 64-frame (2-s) segments scored
        # every 32 frames, the small MobileFaceNet of GeCoConfig's defaults, a linear ID head.
        small = geco_model.GeCoConfig()
        c.frontend.n_mels = 64
        c.model.frames = 64
        c.model.segment_hop = 32
        c.model.stem_channels = small.stem_channels
        c.model.bottlenecks = small.bottlenecks
        c.model.conv_channels = small.conv_channels
        c.model.embedding_dim = small.embedding_dim
        c.model.head = "linear"
        c.model.pae.dim = 64
        c.batch.train, c.batch.eval = 32, 32
        # Steps: at 2,000 extractor steps the ID cross-entropy was 0.002 and the recon head right
        # on every row from step ~150, and the run took 46 min on 2 busy cores; 300 + 1,200
        # steps are for the 25-minute budget.
        p.steps, p.lr, p.frames = 300, 2e-3, 32
        p.schedule = {"kind": "warmup_exp_down", "warmup_steps": 30, "decay_start_step": 150, "exponent": -1.0}
        x.steps, x.lr = 1200, 2e-3
        x.schedule = {"kind": "warmup_exp_down", "warmup_steps": 50, "decay_start_step": 600, "exponent": -1.0}
        for s in (p, x):
            s.log_every, s.checkpoint_every = 50, 250
    if preset == "smoke":
        # Seconds, for tests: 2 machine types x 2 IDs of 2-s clips (63 frames), 32-frame segments.
        c.model.frames, c.model.segment_hop = 32, 16
        c.batch.train, c.batch.eval = 8, 8
        p.steps, x.steps = 20, 40
        p.frames = 32
        for s in (p, x):
            s.schedule = {"kind": "warmup_exp_down", "warmup_steps": 5, "decay_start_step": s.steps // 2,
                          "exponent": -1.0}
            s.log_every, s.checkpoint_every = 10, 20
    return c
