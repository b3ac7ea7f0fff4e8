"""Baseline methods (NFAD, CFLOW-AD) built from bgad's pieces; installed as ``bgad.baselines``."""
