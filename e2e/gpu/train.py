"""A deterministic PyTorch training loop on the GPU: prints each step's loss exactly, so a
run checkpointed and restored in the middle can be compared with an uninterrupted one."""
import sys
import time

import torch

steps, delay = int(sys.argv[1]), float(sys.argv[2])
torch.manual_seed(0)
torch.use_deterministic_algorithms(True)
dev = "cuda"
gen = torch.Generator(device=dev).manual_seed(1)
model = torch.nn.Sequential(
    torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1)
).to(dev)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(8192, 256, device=dev, generator=gen)
y = x.sum(dim=1, keepdim=True).sin()
for step in range(steps):
    idx = torch.randint(0, x.shape[0], (512,), device=dev, generator=gen)
    loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step} loss {loss.item():.12e}", flush=True)
    time.sleep(delay)
print("done", flush=True)
