import math

import pytest
import torch

from altsg_fairseq.modules.cache_pointer import CachePointer


def reference_stream(log_probs, hidden, target, window, theta, lam, full_window_only=False):
    """The cache, written out: per row, per position, a loop over the explicit history.

    log_probs (B, N, V), hidden (B, N, H), target (B, N): the whole stream at
    once (float64). Returns (B, N, V) mixed log-probs.
    """
    B, N, V = log_probs.shape
    out = torch.empty(B, N, V, dtype=torch.float64)
    for b in range(B):
        history = []  # (h_j, y_j), oldest first
        for n in range(N):
            p_model = log_probs[b, n].double().exp()
            recent = history[-window:] if window > 0 else []
            if not recent or (full_window_only and n <= window):
                out[b, n] = log_probs[b, n].double()
            else:
                h_n = hidden[b, n].double()
                scores = [theta * float(h_j @ h_n) for h_j, _ in recent]
                top = max(scores)
                weights = [math.exp(s - top) for s in scores]
                total = sum(weights)
                p_cache = torch.zeros(V, dtype=torch.float64)
                for wgt, (_, y_j) in zip(weights, recent):
                    p_cache[y_j] += wgt / total
                out[b, n] = (lam * p_cache + (1 - lam) * p_model).log()
            history.append((hidden[b, n].double(), int(target[b, n])))
    return out


def random_stream(B, N, V, H, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(B, N, V, generator=g, dtype=torch.float64).mul(2).log_softmax(-1)
    hidden = torch.randn(B, N, H, generator=g, dtype=torch.float64)
    target = torch.randint(0, V, (B, N), generator=g)
    return log_probs.to(dtype), hidden.to(dtype), target


def run_in_windows(cache, log_probs, hidden, target, lengths):
    assert sum(lengths) == log_probs.size(1)
    outs, t = [], 0
    for n in lengths:
        outs.append(cache(log_probs[:, t : t + n], hidden[:, t : t + n], target[:, t : t + n]))
        t += n
    return torch.cat(outs, 1)


LENGTHS = [5, 7, 1, 9, 4, 6]  # 32 positions; boundaries cross the window below


@pytest.mark.parametrize("window", [1, 6, 11, 100])
@pytest.mark.parametrize("chunk_size", [1024, 3])
def test_matches_reference_loop_over_windows(window, chunk_size):
    log_probs, hidden, target = random_stream(3, sum(LENGTHS), V=7, H=5, seed=window)
    theta, lam = 0.8, 0.3
    cache = CachePointer(window=window, theta=theta, lam=lam, chunk_size=chunk_size)
    got = run_in_windows(cache, log_probs, hidden, target, LENGTHS)
    want = reference_stream(log_probs, hidden, target, window, theta, lam)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert cache.history_length == min(window, sum(LENGTHS))


def test_matches_reference_float32():
    log_probs, hidden, target = random_stream(3, sum(LENGTHS), V=7, H=5, seed=1)
    cache = CachePointer(window=6, theta=0.6625, lam=0.1279)
    got = run_in_windows(cache, log_probs.float(), hidden.float(), target, LENGTHS)
    assert got.dtype == torch.float32
    want = reference_stream(log_probs.float(), hidden.float(), target, 6, 0.6625, 0.1279)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_full_window_only_matches_awd_start():
    log_probs, hidden, target = random_stream(2, sum(LENGTHS), V=7, H=5, seed=2)
    cache = CachePointer(window=6, theta=0.7, lam=0.4, full_window_only=True)
    got = run_in_windows(cache, log_probs, hidden, target, LENGTHS)
    want = reference_stream(log_probs, hidden, target, 6, 0.7, 0.4, full_window_only=True)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert torch.equal(got[:, :7], log_probs[:, :7])  # n <= window: model only
    assert not torch.allclose(got[:, 7:], log_probs[:, 7:])


def test_hand_computed_tiny_case():
    # Vocab 3, hidden 2, a uniform model (p_model = 1/3 each), lam = 1/2,
    # theta = ln(3) / 2.  Stream: h_0 = (1, 0), y_0 = 0;  h_1 = (0, 1), y_1 = 1;
    # h_2 = (2, 0), y_2 = 2.
    # n = 0: no history -> p = (1/3, 1/3, 1/3).
    # n = 1: history {j=0}: the attention is 1 on j = 0, p_cache = (1, 0, 0),
    #        p = 1/2 (1, 0, 0) + 1/2 (1/3, 1/3, 1/3) = (2/3, 1/6, 1/6).
    # n = 2: scores theta <h_0, h_2> = ln 3 and theta <h_1, h_2> = 0,
    #        attention (3, 1) / 4, p_cache = (3/4, 1/4, 0),
    #        p = (3/8 + 1/6, 1/8 + 1/6, 1/6) = (13/24, 7/24, 4/24).
    # With window = 1, n = 2 sees only j = 1: p_cache = (0, 1, 0),
    #        p = (1/6, 2/3, 1/6).
    log_probs = torch.full((1, 3, 3), -math.log(3), dtype=torch.float64)
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]], dtype=torch.float64)
    target = torch.tensor([[0, 1, 2]])
    want = torch.tensor(
        [[[1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 6, 1 / 6], [13 / 24, 7 / 24, 4 / 24]]], dtype=torch.float64
    ).log()
    theta = math.log(3) / 2

    got = CachePointer(window=10, theta=theta, lam=0.5)(log_probs, hidden, target)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

    split = CachePointer(window=10, theta=theta, lam=0.5)  # the same, two calls
    got = run_in_windows(split, log_probs, hidden, target, [2, 1])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

    got = CachePointer(window=1, theta=theta, lam=0.5)(log_probs, hidden, target)
    want_2 = torch.tensor([1 / 6, 2 / 3, 1 / 6], dtype=torch.float64).log()
    torch.testing.assert_close(got[0, 2], want_2, rtol=1e-12, atol=1e-12)


def test_lambda_zero_and_window_zero_give_log_probs_back():
    log_probs, hidden, target = random_stream(3, 32, V=7, H=5, seed=3, dtype=torch.float32)
    for cache in (CachePointer(window=6, lam=0.0), CachePointer(window=0, lam=0.5)):
        got = run_in_windows(cache, log_probs, hidden, target, LENGTHS)
        assert torch.equal(got, log_probs)


def test_first_position_unchanged_and_later_ones_mixed():
    log_probs, hidden, target = random_stream(3, 8, V=7, H=5, seed=4, dtype=torch.float32)
    got = CachePointer(window=6, lam=0.5)(log_probs, hidden, target)
    assert torch.equal(got[:, 0], log_probs[:, 0])
    assert not torch.allclose(got[:, 1:], log_probs[:, 1:])
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(3, 8))  # still distributions


def test_reset_forgets():
    log_probs, hidden, target = random_stream(3, 16, V=7, H=5, seed=5)
    fresh = CachePointer(window=6, lam=0.3)(log_probs[:, 8:], hidden[:, 8:], target[:, 8:])
    cache = CachePointer(window=6, lam=0.3)
    cache(log_probs[:, :8], hidden[:, :8], target[:, :8])
    carried = cache(log_probs[:, 8:], hidden[:, 8:], target[:, 8:])
    assert not torch.allclose(carried, fresh)
    cache.reset()
    assert cache.history_length == 0
    again = cache(log_probs[:, 8:], hidden[:, 8:], target[:, 8:])
    assert torch.equal(again, fresh)
    assert torch.equal(again[:, 0], log_probs[:, 8])


def test_rows_are_independent():
    log_probs, hidden, target = random_stream(3, 32, V=7, H=5, seed=6)
    together = run_in_windows(CachePointer(window=6, lam=0.3), log_probs, hidden, target, LENGTHS)
    for b in range(3):
        alone = run_in_windows(
            CachePointer(window=6, lam=0.3), log_probs[b : b + 1], hidden[b : b + 1], target[b : b + 1], LENGTHS
        )
        torch.testing.assert_close(together[b : b + 1], alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1024, 3])
def test_targets_get_their_attention_mass(chunk_size):
    # What eval-lm scores: the mixed probability of each target, read from
    # forward's output, is lam * (the attention on past positions whose word
    # is the target) + (1 - lam) * p_model(target), worked out from the target alone.
    log_probs, hidden, target = random_stream(3, 32, V=7, H=5, seed=7)
    window, theta, lam = 6, 0.6625, 0.3
    cache = CachePointer(window=window, theta=theta, lam=lam, chunk_size=chunk_size)
    got = run_in_windows(cache, log_probs, hidden, target, LENGTHS).gather(2, target.unsqueeze(2)).squeeze(2)
    for b in range(3):
        for n in range(32):
            p_model = float(log_probs[b, n, target[b, n]].exp())
            past = range(max(0, n - window), n)
            if not past:
                assert float(got[b, n]) == float(log_probs[b, n, target[b, n]])
                continue
            weights = torch.stack([theta * hidden[b, j] @ hidden[b, n] for j in past]).softmax(0)
            hits = sum(float(w) for w, j in zip(weights, past) if target[b, j] == target[b, n])
            assert float(got[b, n]) == pytest.approx(math.log(lam * hits + (1 - lam) * p_model), abs=1e-12)


def test_cache_lowers_perplexity_on_repeated_words():
    # Words recur; the hidden state that predicts a word is (nearly) the same
    # each time it is predicted. The model knows nothing (random logits), so
    # the cache must raise the target's probability at every repeat.
    g = torch.Generator().manual_seed(8)
    V, H, B, N = 50, 16, 2, 60
    embed = torch.linalg.qr(torch.randn(H, H, generator=g))[0][:5] * 3  # 5 orthogonal keys
    words = torch.randint(0, 5, (B, N), generator=g)
    hidden = embed[words] + 0.05 * torch.randn(B, N, H, generator=g)
    log_probs = torch.randn(B, N, V, generator=g).log_softmax(-1)
    cache = CachePointer(window=20, theta=1.0, lam=0.3)
    mixed = run_in_windows(cache, log_probs, hidden, words, [10] * 6)

    model_lp = log_probs.gather(2, words.unsqueeze(2)).squeeze(2)
    mixed_lp = mixed.gather(2, words.unsqueeze(2)).squeeze(2)
    seen_before = torch.zeros(B, N, dtype=torch.bool)
    for b in range(B):
        for n in range(1, N):
            seen_before[b, n] = bool((words[b, max(0, n - 20) : n] == words[b, n]).any())
    assert seen_before.sum() > 0.8 * B * N
    assert (mixed_lp[seen_before] > model_lp[seen_before]).all()
    assert math.exp(-mixed_lp.mean()) < math.exp(-model_lp.mean())


def test_numerically_safe_with_large_scores_and_zero_model_probs():
    log_probs, hidden, target = random_stream(2, 12, V=7, H=5, seed=9, dtype=torch.float32)
    log_probs[:, :, 3] = -math.inf  # the model gives word 3 no mass
    log_probs = log_probs.log_softmax(-1)
    target[:, 4] = 3
    cache = CachePointer(window=8, theta=50.0, lam=0.2)
    got = cache(log_probs, hidden * 100, target)  # scores ~ 1e6: softmax must not overflow
    assert not torch.isnan(got).any()
    assert torch.isfinite(got[:, 5:, 3]).any()  # word 3 gets mass from the cache
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(2, 12))


def test_history_is_detached_and_follows_inputs():
    log_probs, hidden, target = random_stream(2, 6, V=7, H=5, seed=10)
    hidden.requires_grad_(True)
    cache = CachePointer(window=4, lam=0.3)
    out = cache(log_probs, hidden, target)
    assert out.dtype == torch.float64
    assert not cache.keys.requires_grad and cache.keys.dtype == torch.float64
    assert cache.keys.device == hidden.device and cache.keys.shape == (2, 4, 5)
    assert torch.equal(cache.words, target[:, -4:])
    out.sum().backward()  # gradients reach this window's queries, not the history
    assert hidden.grad is not None

    with pytest.raises(ValueError, match="batch size"):
        cache(log_probs[:1], hidden[:1].detach(), target[:1])
