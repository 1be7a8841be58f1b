"""Reference AdamW trajectory for tests/train.rs (run with a Python that has torch: python3 tests/reference/adamw_torch.py).

torch.optim.AdamW in float64, lr 0.1, betas (0.9, 0.999), eps 1e-8; parameter group p with weight
decay 0.01, group q without; three steps with fixed gradients. Prints the parameters after each step.
"""
import torch

torch.set_num_threads(1)
p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
q = torch.nn.Parameter(torch.tensor([0.3, 0.7], dtype=torch.float64))
opt = torch.optim.AdamW(
    [{"params": [p], "weight_decay": 0.01}, {"params": [q], "weight_decay": 0.0}],
    lr=0.1,
    betas=(0.9, 0.999),
    eps=1e-8,
)
grads = [([0.5, -1.0, 2.0], [0.1, -0.2]), ([-1.0, 0.25, 0.0], [0.3, 0.3]), ([0.2, 0.2, -3.0], [-0.5, 1.0])]
for gp, gq in grads:
    p.grad = torch.tensor(gp, dtype=torch.float64)
    q.grad = torch.tensor(gq, dtype=torch.float64)
    opt.step()
    print([repr(float(v)) for v in p.detach()], [repr(float(v)) for v in q.detach()])
