"""GeCo's ``paper`` preset pinned to what is published: STgram-MFN's front end, network and optimiser
(liuyoude/STgram-MFN config.yaml and net.py, ``spec/papers.md`` §3) and DCASE2020 task 2's pAUC
limit. GeCo itself states no sizes or weights; those values are marked "our choice" in the config
and are not pinned here. Nothing is read or trained."""
from __future__ import annotations

import pytest

from experiments import registry
from experiments.geco import system as geco_system
from jaxaudio.errors import ConfigError

DCASE_CLASSES = ("ToyCar/id_01", "ToyCar/id_02", "fan/id_00", "pump/id_00", "slider/id_00", "valve/id_00")


@pytest.fixture(scope="module")
def config():
    c = registry.load_config("geco", "paper")
    c.data.classes = DCASE_CLASSES          # set by hand, so no data folder is needed
    return c


def test_front_end_is_stgram_mfns(config):
    fe = geco_system.frontend_config(config)
    # sr 16000, n_fft = win 1024, hop 512, 128 mels, power 2, log (dB) mel
    assert (fe.sample_rate, fe.n_fft, fe.win_length, fe.hop_length, fe.n_mels, fe.power, fe.log) == (
        16000, 1024, 1024, 512, 128, 2.0, "db")
    assert config.data.clip_seconds == 10.0 and config.data.subsets == ("dev",)


def test_network_is_stgram_mfns_with_a_recon_head(config):
    net = geco_system.model_config(config).net
    assert net.frames == 313                                         # 10 s at hop 512
    assert net.wave_branch and net.tgram_layers == 3 and net.tgram_slope == 0.2
    assert net.stem_channels == 64
    assert net.bottlenecks == ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))
    assert net.conv_channels == 512 and net.embedding_dim == 128
    assert (net.activation, net.pooling) == ("prelu", "gdc")
    assert (net.head, net.arc_margin, net.arc_scale) == ("arcface", 0.7, 30.0)   # config.yaml: m 0.7, s 30
    assert net.n_classes == len(DCASE_CLASSES)
    assert net.recon_head                                            # GeCo's real-vs-reconstruction head


def test_optimiser_and_batch_are_stgram_mfns(config):
    stages = {s.name: s for s in registry.load("geco").stages(config, "/nonexistent")}
    assert list(stages) == ["pae", "extractor", "thresholds"]
    x = stages["extractor"]
    assert x.default_group["lr"] == 1e-4 and x.default_group["weight_decay"] == 1e-6   # Adam lr 1e-4, wd 1e-6
    assert config.batch.train == 128
    assert x.init_from == "pae"                      # the PAEs are trained first, then frozen
    assert any(g["pattern"] == geco_system.FROZEN and g["lr"] == 0.0 for g in x.groups)
    assert config.eval.max_fpr == 0.1                # DCASE2020 baseline.yaml
    assert config.geco.reconstructions and config.geco.supcon_weight > 0 and config.geco.recon_weight > 0


def test_paper_preset_without_a_data_folder_refuses(tmp_path):
    """The paper preset is for DCASE2020 task 2: it must not start generating a 3.4 GB stand-in."""
    c = registry.load_config("geco", "paper")
    with pytest.raises(ConfigError, match="data_dir"):
        geco_system.model_config(c)
