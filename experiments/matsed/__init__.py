"""MAT-SED: masked audio transformer with masked-reconstruction pre-training for SED."""
