"""NFAD: the same backbone and flows as BGAD, trained on normal data only with the ML loss for all epochs."""

from bgad.method import METHODS, MethodSpec

NFAD = METHODS.register(
    "nfad",
    MethodSpec(
        "nfad", "ml", False, "NFAD: normalizing flows on normal data only (BGAD's unsupervised baseline)"
    ),
)
