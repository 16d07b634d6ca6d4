"""torchvision architectures with random weights whose numbers look like a trained
network's: BatchNorm running statistics are set from one batch of standard-normal
images (batch 64, momentum 1; what normalised images look like, and what ``inspect --check``
feeds), so activations keep unit scale down the network instead of fading to 1e-20
(random init with mean 0 / var 1 statistics), and a parity check on the logits means
something. A head torchvision initialises to zeros (ViT's, whose logits would all be 0)
gets random weights. For ``amalgam export-teacher torch tests.zoo_teachers:calibrated
--kwargs '{"arch": "resnet18"}'``; ``deit_tiny`` is torchvision's VisionTransformer at DeiT-Ti's size.
"""

import torch
import torchvision


def calibrated(arch, size=32, seed=0, batch=64, **kwargs):
    """``torchvision.models.<arch>(weights=None, **kwargs)``, BatchNorm statistics set, eval mode."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None, **kwargs)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = 1.0
    if norms:
        model.train()
        with torch.no_grad():
            model(torch.randn(batch, 3, size, size))
    for m in norms:
        m.momentum = 0.1
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and not m.weight.any():
            torch.nn.init.normal_(m.weight, std=m.in_features**-0.5)
    return model.eval()


def deit_tiny(image_size=32, seed=0):
    """DeiT-Ti's shape (patch 16, dim 192, 12 layers, 3 heads, MLP 768) as torchvision's VisionTransformer,
    random weights, its zero head made random."""
    torch.manual_seed(seed)
    model = torchvision.models.VisionTransformer(image_size, 16, 12, 3, 192, 768)
    torch.nn.init.normal_(model.heads.head.weight, std=192**-0.5)
    return model.eval()
