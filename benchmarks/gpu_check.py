"""The device check's Python part (scripts/gpu_check.sh runs it; no fairseq needed).

    python benchmarks/gpu_check.py prerequisites|tests|kernels|training [--report FILE]

  prerequisites  a CUDA GPU, a CuPy that imports, the CUDA kernels that compile;
                 one line and exit 1 at the first that is missing.
  tests          the tests marked ``cuda`` (pytest -m cuda): all must run and pass,
                 a skipped one fails the check (pytest's output: --log).
  kernels        the forget-mult kernels at the real shapes, timed by CUDA events,
                 next to this card's measured device-to-device copy bandwidth;
                 the chunked scan checked against one thread per column (float64).
  training       --use-sg training windows of the paper's model (a 4-layer QRNN,
                 400 -> 1550 -> 400, 20 rows of 70 tokens, a 10,000-word softmax,
                 the QRNN synthesizer of hidden size 50 over its 101,000 state
                 numbers) in fp32, amp and fp16 as fairseq runs them: amp is
                 autocast(float16) around the forward and loss (fairseq runs the
                 criterion, and so the synthesizer's calls, inside it) and a
                 GradScaler; fp16 is a .half() model (the synthesizer stays
                 float32, as fairseq's --fp16 leaves the task's modules) and a
                 static loss scale. Every window's statistics must be finite and
                 no window skipped, and the synthesizer's input map and core must
                 get non-zero gradients.

Every line goes to stdout and is appended to the report as it is written. Exit
status: 0 when every check passed, 1 at the first failure (its line says which).
"""

import argparse
import math
import os
import re
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

REPORT = None


def say(line: str) -> None:
    """Print one line and append it to the report at once (a killed run keeps what it measured)."""
    print(line, flush=True)
    if REPORT:
        with open(REPORT, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class CheckFailed(Exception):
    """One line saying which check failed."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# ---- prerequisites ---------------------------------------------------------------------


def prerequisites() -> None:
    from altsg_fairseq.modules import forget_mult_cuda

    check(
        torch.cuda.is_available(),
        f"no GPU: torch.cuda.is_available() is False (torch {torch.__version__}, "
        f"built with CUDA {torch.version.cuda or 'none'})",
    )
    check(
        forget_mult_cuda.cupy_or_none() is not None,
        f"no CuPy: {forget_mult_cuda.cupy_problem()}; {forget_mult_cuda.install_hint()}",
    )
    import cupy

    f = torch.rand(4, 3, device="cuda")
    try:
        forget_mult_cuda.forward(f, f, torch.zeros(3, device="cuda"))  # compiles through NVRTC
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - whatever CuPy or the driver raises, said in one line
        first = (str(e).strip().splitlines() or [""])[0]
        raise CheckFailed(f"the CUDA kernels do not compile or run: {type(e).__name__}: {first}") from e
    props = torch.cuda.get_device_properties(0)
    say(
        f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs | "
        f"torch {torch.__version__} (CUDA {torch.version.cuda}) | cupy {cupy.__version__} | "
        f"python {sys.version.split()[0]}"
    )


# ---- the GPU tests ----------------------------------------------------------------------------


def gpu_test_files(root: str = "tests") -> list:
    """The test files that hold tests marked ``cuda`` (a ``@pytest.mark.cuda`` line)."""
    found = []
    for folder, _, names in os.walk(root):
        for name in sorted(names):
            path = os.path.join(folder, name)
            if name.startswith("test_") and name.endswith(".py"):
                with open(path, encoding="utf-8") as f:
                    if re.search(r"^\s*@pytest\.mark\.cuda\b", f.read(), re.MULTILINE):
                        found.append(path)
    return sorted(found)


def judge_tests(returncode: int, output: str) -> str:
    """The verdict on ``pytest -m cuda -rs`` (its exit status and output): one line;
    CheckFailed unless it exited 0, ran at least one test and skipped none."""
    skipped = [line for line in output.splitlines() if line.startswith("SKIPPED")]
    passed = re.findall(r"(\d+) passed", output)
    summary = (output.strip().splitlines() or ["no output"])[-1]
    check(
        returncode == 0 and not skipped and passed and int(passed[-1]) > 0,
        f"the GPU tests did not all run and pass (pytest exit {returncode}, {len(skipped)} skipped"
        + (f", first: {skipped[0]}" if skipped else "")
        + f"): {summary}",
    )
    return f"GPU tests: {passed[-1]} passed, none skipped"


def gpu_tests(log: str) -> None:
    import subprocess

    files = gpu_test_files()
    check(bool(files), "no test is marked cuda")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "-m", "cuda", *files],
        capture_output=True,
        text=True,
    )
    with open(log, "w", encoding="utf-8") as f:
        f.write(proc.stdout + proc.stderr)
    say(judge_tests(proc.returncode, proc.stdout + proc.stderr) + f" ({', '.join(files)}; log: {log})")


# ---- kernels ------------------------------------------------------------------------------


def gpu_ms(fn, repeat: int) -> float:
    """Milliseconds per call of ``fn`` between two CUDA events around ``repeat`` back-to-back
    calls (after one warm-up call): the GPU's time, which includes the host's launch cost
    only where the GPU waited for it (``host_ms`` says whether it could have)."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeat


def host_ms(fn, repeat: int) -> float:
    """Milliseconds per call the host spends issuing ``fn`` (no synchronisation inside)."""
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    spent = time.perf_counter() - t
    torch.cuda.synchronize()
    return spent * 1e3 / repeat


def copy_bandwidth(megabytes: int = 1024, repeat: int = 20) -> float:
    """This card's device-to-device copy bandwidth in bytes/s (bytes read + written)."""
    n = megabytes * 2**20 // 4
    src, dst = torch.rand(n, device="cuda"), torch.empty(n, device="cuda")
    ms = gpu_ms(lambda: dst.copy_(src), repeat)
    return 2 * n * 4 / (ms / 1e3)


def traffic_bytes(T: int, N: int, itemsize: int = 4) -> int:
    """Forward reads f, x and writes c; backward reads f, x, c, grad_c and writes grad_f, grad_x."""
    return 9 * T * N * itemsize


# (name, T, N): the base model's layer (20 rows x 1550), the synthesizer's sequence (its
# hidden 50 over the 101,000 state numbers of 20 rows, and 4 times longer), and N around the
# switch to the chunked scan (forget_mult_cuda.chunk_length: N >= 16,384 -> one thread per column)
SHAPES = [
    ("base model layer", 200, 20 * 1550),
    ("synthesizer, 20 rows", 101_000, 50),
    ("synthesizer, 80 rows", 404_000, 50),
    ("near the switch", 2048, 8192),
    ("near the switch", 2048, 16_383),
    ("near the switch", 2048, 16_384),
    ("near the switch", 2048, 32_768),
]


def kernels(repeat: int) -> None:
    from altsg_fairseq.modules import forget_mult_cuda as fm

    copy = copy_bandwidth()
    say(f"device-to-device copy: {copy / 1e9:.0f} GB/s (measured, read + write)")
    for name, T, N in SHAPES:
        f, x = torch.rand(T, N, device="cuda"), torch.randn(T, N, device="cuda")
        h0, grad = torch.randn(N, device="cuda"), torch.randn(T, N, device="cuda")
        L = fm.chunk_length(T, N)
        chosen = L or 0
        rows = {}
        for design, chunk in [("one thread per column", 0), (f"chunked scan L={L or 0}", L)]:
            if chunk is None:
                continue
            c = fm.forward(f, x, h0, chunk=chunk)
            calls = repeat if T * N < 10**8 else max(2, repeat // 4)  # one thread walks 404,000 steps
            fwd = gpu_ms(lambda: fm.forward(f, x, h0, chunk=chunk), calls)
            bwd = gpu_ms(lambda: fm.backward(f, x, h0, c, grad, chunk=chunk), calls)
            host = host_ms(lambda: fm.backward(f, x, h0, c, grad, chunk=chunk), calls)
            rows[chunk] = fwd + bwd
            rate = traffic_bytes(T, N) / ((fwd + bwd) / 1e3)
            mark = " (chosen)" if chunk == chosen else ""
            say(
                f"  {name} T={T:,} N={N:,}: {design}{mark}: fwd {fwd:.3f} ms, bwd {bwd:.3f} ms "
                f"(host issues a bwd in {host:.3f} ms), {rate / 1e9:.0f} GB/s = {rate / copy:.0%} of the copy"
            )
        if L:
            say(f"  {name} T={T:,} N={N:,}: chunked scan {rows[0] / rows[L]:.1f}x one thread per column")
            check_designs_agree(fm, T, N, L)
        f = x = h0 = grad = None  # free the GPU memory before the next shape
        torch.cuda.empty_cache()


def check_designs_agree(fm, T: int, N: int, L: int) -> None:
    """The chunked scan equals one thread per column at this shape (float64, forward and backward)."""
    g = torch.Generator(device="cuda").manual_seed(T + N)
    f = torch.rand(T, N, device="cuda", dtype=torch.float64, generator=g)
    x, grad = (torch.randn(T, N, device="cuda", dtype=torch.float64, generator=g) for _ in range(2))
    h0 = torch.randn(N, device="cuda", dtype=torch.float64, generator=g)
    c_seq, c_scan = fm.forward(f, x, h0, chunk=0), fm.forward(f, x, h0, chunk=L)
    check(torch.allclose(c_scan, c_seq, rtol=1e-9, atol=1e-12), f"chunked forward differs at T={T}, N={N}")
    for a, b, what in zip(
        fm.backward(f, x, h0, c_seq, grad, chunk=L),
        fm.backward(f, x, h0, c_seq, grad, chunk=0),
        ("grad_f", "grad_x", "grad_h0"),
    ):
        check(torch.allclose(a, b, rtol=1e-9, atol=1e-12), f"chunked {what} differs at T={T}, N={N}")


# ---- training steps of the paper's model -------------------------------------------------------

V, ROWS, BPTT = 10_000, 20, 70
LOSS_SCALE = 128.0  # fairseq's --fp16-init-scale


class PaperLM(torch.nn.Module):
    """Embedding 400 -> RecurrentStack("qrnn", 400, 1550, 400, 4) -> linear softmax over V
    (``sizes`` = (V, embedding, hidden, layers) gives another model of the same kind)."""

    def __init__(self, sizes=(V, 400, 1550, 4)):
        from altsg_fairseq.modules import RecurrentStack

        super().__init__()
        vocabulary, embedding, hidden, layers = sizes
        self.embed = torch.nn.Embedding(vocabulary, embedding)
        self.stack = RecurrentStack("qrnn", embedding, hidden, embedding, layers)
        self.out = torch.nn.Linear(embedding, vocabulary)

    def forward(self, tokens, flat, template):
        """tokens (B, T); flat (B, S) the carried state. Returns logits (B, T, V) and the final states."""
        h, final = self.stack(self.embed(tokens.t()), self.stack.unpack(flat, template))
        return self.out(h).transpose(0, 1), final


def training(
    mode: str, windows: int, device: str = "cuda", sizes=(V, 400, 1550, 4), rows: int = ROWS, bptt: int = BPTT
) -> None:
    """``windows`` windows of the paper's model with synthetic gradients (real phase for
    the first, synthetic after, so injection runs too) in precision ``mode`` ("fp32",
    "amp", "fp16"); CheckFailed at the first broken window."""
    from altsg_fairseq.dni import BackwardInterface, Synthesizer
    from altsg_fairseq.modules import map_state

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    torch.manual_seed(0)
    model = PaperLM(sizes).to(device)
    if mode == "fp16":
        model.half()
    interface = BackwardInterface(Synthesizer("qrnn", hidden=50).to(device), layer_sizes=model.stack.state_sizes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(device) if mode == "amp" else None
    vocabulary = sizes[0]
    tokens = torch.randint(vocabulary, (rows, windows * bptt + 1), device=device)
    S = sum(model.stack.state_sizes)
    state, template = model.embed.weight.new_zeros(rows, S), None  # as the decoder's start_state
    for w in range(windows):
        interface.synthetic = w > 0
        inputs, target = tokens[:, w * bptt : (w + 1) * bptt], tokens[:, w * bptt + 1 : (w + 1) * bptt + 1]
        ntokens = target.numel()
        sync()
        t = time.perf_counter()
        with torch.autocast(device, dtype=torch.float16, enabled=mode == "amp"):
            start, probe = interface.wrap_start(state, ntokens, restart=w == 0)
            logits, final = model(inputs, start, template)
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, vocabulary), target.reshape(-1), reduction="sum"
            )
            loss = loss + probe
            if interface.synthetic:
                loss = loss + interface.inject(model.stack.pack(final), ntokens)
        if mode == "amp":
            scaler.scale(loss).backward()
        elif mode == "fp16":
            (loss * LOSS_SCALE).backward()
        else:
            loss.backward()
        stats = {k: float(v) for k, v in interface.pop_stats().items()}
        grads = {
            n: float(p.grad.abs().sum()) if p.grad is not None else 0.0
            for n, p in interface.synthesizer.named_parameters()
            if n.startswith(("input_map", "core"))
        }
        if mode == "amp":
            scaler.unscale_(optimizer)
            scaler.step(optimizer)
            scaler.update()
        else:
            if mode == "fp16":
                for p in model.parameters():
                    p.grad.div_(LOSS_SCALE)
            check(all(torch.isfinite(p.grad).all() for p in model.parameters()), f"{mode}: model gradients not finite")
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        interface.step()
        sync()
        ms = (time.perf_counter() - t) * 1e3
        say(
            f"  {mode} window {w + 1} ({'synthetic' if w else 'real'}): loss {float(loss.detach()) / ntokens:.3f} nats/token, "
            f"{ms:.0f} ms, sg_loss/element {stats.get('sg_loss', math.nan) / max(stats.get('sg_elements', 1), 1):.3g}, "
            f"|g_true|^2 {stats.get('sg_true_sq', math.nan):.3g}, skipped {stats.get('sg_skipped')}, "
            f"synthesizer input_map+core |grad| {sum(grads.values()):.3g}"
        )
        check(stats.get("sg_elements") == rows * S, f"{mode}: the window's statistics are missing ({sorted(stats)})")
        check(all(math.isfinite(v) for v in stats.values()), f"{mode} window {w + 1}: statistics not finite: {stats}")
        check(stats["sg_skipped"] == 0, f"{mode} window {w + 1}: the synthesizer's target was skipped (not finite)")
        check(stats["sg_true_sq"] > 0, f"{mode} window {w + 1}: the true gradient at the start state is exactly 0")
        zero = [n for n, g in grads.items() if not g > 0]
        # (the first window starts from zeros: the input map's weight gets no gradient there)
        check(
            w == 0 or not zero, f"{mode} window {w + 1}: synthesizer parameters with zero gradient: {', '.join(zero)}"
        )
        state = model.stack.pack(final).detach()
        template = map_state(final, lambda t: t.detach())
    del model, interface, optimizer
    if device == "cuda":
        torch.cuda.empty_cache()


def main() -> int:
    global REPORT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=["prerequisites", "tests", "kernels", "training"])
    parser.add_argument("--log", default="tests.log", help="where pytest's output goes (tests)")
    parser.add_argument("--report", help="a file every line is appended to as it is written")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per kernel (kernels)")
    parser.add_argument("--windows", type=int, default=3, help="training windows per precision (training)")
    args = parser.parse_args()
    REPORT = args.report
    try:
        if args.part == "prerequisites":
            prerequisites()
        elif args.part == "tests":
            gpu_tests(args.log)
        elif args.part == "kernels":
            say("forget-mult kernels (CUDA events; GB/s of forward + backward traffic):")
            kernels(args.repeat)
        else:
            for mode in ("fp32", "amp", "fp16"):
                say(f"paper model, --use-sg, {mode}:")
                training(mode, args.windows)
    except CheckFailed as e:
        say(f"gpu_check: {e}")
        return 1
    except ModuleNotFoundError as e:
        say(f"gpu_check: missing {e.name}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
