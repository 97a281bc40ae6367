"""One training step of the default run's shape (nano, batch 32 x 64, AdamW) timed N times: python docs/bench/thread_step.py THREADS STEPS."""
import os
import sys
import time

import torch

from minigpt.config import ModelConfig
from minigpt.model import GPT

n = int(sys.argv[1]); steps = int(sys.argv[2])
torch.set_num_threads(n)
torch.manual_seed(0)
m = GPT(ModelConfig.from_preset("nano", vocab_size=65))
opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)
x = torch.randint(0, 65, (32, 64)); y = torch.randint(0, 65, (32, 64))
ts = []
for i in range(steps):
    t0 = time.perf_counter()
    _, loss = m(x, y); loss.backward(); opt.step(); opt.zero_grad()
    ts.append(time.perf_counter() - t0)
ts = sorted(ts[3:])
print(f"threads={n} policy={os.environ.get('OMP_WAIT_POLICY','-')} median {1000*ts[len(ts)//2]:.1f} ms  mean {1000*sum(ts)/len(ts):.1f}")
