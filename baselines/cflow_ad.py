"""CFLOW-AD: NFAD's training with CFLOW-AD's own backbone (WideResNet-50-2, layer2/3/4) and fibers of 256."""

from bgad.method import METHODS, MethodSpec

CFLOW_AD = METHODS.register(
    "cflow",
    MethodSpec(
        "cflow",
        "ml",
        False,
        "CFLOW-AD: conditional flows on WideResNet-50-2 features (torchvision ImageNet weights), fibers of 256",
        defaults={"backbone": "wide_resnet50_2", "fiber_size": 256},
    ),
)
