"""PMAM: prototype-based masked audio model pre-training for SED."""
