"""The DCASE2020 task-2 autoencoder baseline for anomalous sound detection."""
