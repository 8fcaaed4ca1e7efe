import sys, time, torch, itertools
from coronet.model import build_model
torch.manual_seed(0)
mode = sys.argv[1]; bs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
m = build_model()
cl = "cl" in mode
if cl: m = m.to(memory_format=torch.channels_last)
fused = "fused" in mode
opt = torch.optim.Adam(m.parameters(), lr=1e-4, fused=fused) if fused else torch.optim.Adam(m.parameters(), lr=1e-4, foreach=True)
x = torch.rand(bs, 1, 150, 150); y = torch.randint(0, 4, (bs,))
if cl: x = x.contiguous(memory_format=torch.channels_last)
step_model = torch.compile(m) if "compile" in mode else m
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in mode):
        loss = torch.nn.functional.cross_entropy(step_model(x), y)
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
for _ in range(3): step()
n = 8; t = time.perf_counter()
for _ in range(n): step()
dt = time.perf_counter() - t
print(f"{mode:25s} bs={bs} {n*bs/dt:6.1f} img/s  {dt/n*1000:6.0f} ms/step")
