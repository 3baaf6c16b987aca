"""Few-shot on a frozen backbone, no meta-training: class prototypes (or a finetuned
logistic head) on your encoder's embeddings, adapted in PyTorch and exported as one ONNX
adapter graph that adapts on a device with no PyTorch.
Usage: python examples/pretrained_backbone_fewshot.py [OUT_DIR]"""

import sys
from pathlib import Path

import torch

import mtl_deploy
from mtl_deploy.runtime import FewShotAdapter
from my_networks import ImageEncoder

out = Path(sys.argv[1] if len(sys.argv) > 1 else "fewshot-backbone-out")
torch.manual_seed(0)
backbone = ImageEncoder().eval()  # in practice: your pretrained encoder, its weights loaded
gen = torch.Generator().manual_seed(1)
centres = 2 * torch.randn(5, 1, 16, 16, generator=gen)  # five classes of image
support_y, query_y = torch.arange(5).repeat(2), torch.arange(5).repeat(4)
support_x = centres[support_y] + 0.5 * torch.randn(10, 1, 16, 16, generator=gen)
query_x = centres[query_y] + 0.5 * torch.randn(20, 1, 16, 16, generator=gen)

for head in ("prototypes", "finetune"):
    model = mtl_deploy.fewshot(backbone, head, example_inputs=support_x[:2], ways=5, steps=50, lr=0.5)
    adapted = mtl_deploy.adapt(model, support_x, support_y)
    with torch.no_grad():
        accuracy = (adapted(query_x)["class"].argmax(1) == query_y).float().mean()
    report = mtl_deploy.export(model, out / head, format="adapter")
    on_device = FewShotAdapter(out / head).adapt(support_x.numpy(), support_y.numpy()).predict(query_x.numpy())
    gap = abs(on_device - adapted(query_x)["class"].detach().numpy()).max()
    print(f"{head:10s} 5-way 2-shot accuracy {accuracy:.2f}; adapter parity {report.parity.passed}, "
          f"ONNX Runtime vs PyTorch {gap:.1e}")
