"""The continuous cache ("neural cache pointer") of Grave et al. (2017).

At evaluation time the model's next-word distribution is mixed with a
distribution over the words seen recently in the same stream:

    p(w | n) = lam * p_cache(w | n) + (1 - lam) * p_model(w | n)

    p_cache(w | n) = sum over j in H(n) with y_j == w of a_j(n)
    a(n) = softmax over j in H(n) of theta * <h_j, h_n>

where h_j is the last layer's output at position j (the vector that
predicted y_j, the word at j + 1) and H(n) holds the previous ``window``
positions j < n of this stream (never n itself). At the first position of a
stream H(n) is empty and p(w | n) is p_model(w | n) unchanged.

Text comes one window (one BPTT segment) at a time, in order; the history is
carried from call to call, one independent stream per batch row. Every call
scores all of its positions together: one batched matmul of the window's
queries against [history; window] keys, with a causal + window mask.

Defaults (window 3785, theta 0.6625, lambda 0.1279) are those of AWD-LSTM's
``pointer.py``. One difference from that script: it only starts mixing at
stream positions n > window (before that it scores with the model alone);
here mixing starts as soon as the history holds one entry. Pass
``full_window_only=True`` to get the script's behaviour.
"""

import math
from typing import Optional

import torch
from torch import Tensor, nn


class CachePointer(nn.Module):
    """Mixes a model's log-softmax with a continuous cache over its history (Grave et al., 2017).

    The history is state, not parameters: it is kept detached, in the
    dtype and on the device of the last call's ``hidden``. ``reset()``
    forgets it (call it at the start of every pass over a data set).
    ``scored`` and ``mixed`` count the targets seen and those the cache was
    mixed into, over all calls (``reset()`` keeps them).

    Args:
        window: how many past (h_j, y_j) pairs each row keeps (>= 0; 0
            disables the cache; ``ValueError`` below 0).
        theta: inverse temperature of the attention.
        lam: weight of the cache distribution, in [0, 1] (``ValueError`` outside).
        full_window_only: mix only at stream positions n > window, as
            AWD-LSTM's pointer.py does.
        chunk_size: how many query positions are scored at once; bounds the
            (B, chunk, window + T) and (B, chunk, V) intermediates, not the result.

    Inputs (``forward``):
        log_probs: (B, T, V) the model's log-softmax (natural log) at each position;
        hidden: (B, T, H) the last layer's outputs; target: (B, T) next-word ids.

    Outputs:
        (B, T, V) log(lam * p_cache + (1 - lam) * p_model), natural log, in
        ``log_probs``' dtype.
    """

    def __init__(
        self,
        window: int = 3785,
        theta: float = 0.6625,
        lam: float = 0.1279,
        full_window_only: bool = False,
        chunk_size: int = 1024,
    ):
        super().__init__()
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.window = int(window)
        self.theta = float(theta)
        self.lam = float(lam)
        self.full_window_only = bool(full_window_only)
        self.chunk_size = int(chunk_size)
        self.scored = self.mixed = 0
        self.reset()

    def reset(self) -> None:
        """Forget the history (every row)."""
        self.keys: Optional[Tensor] = None  # (B, L, H), L <= window
        self.words: Optional[Tensor] = None  # (B, L) int64
        self.seen = 0  # positions of the stream seen so far (per row)

    @property
    def history_length(self) -> int:
        """L: the number of (h_j, y_j) pairs each row currently holds."""
        return 0 if self.keys is None else self.keys.size(1)

    # ------------------------------------------------------------------ API

    def forward(self, log_probs: Tensor, hidden: Tensor, target: Tensor) -> Tensor:
        """Score one window and append it to the history.

        log_probs: (B, T, V) the model's log-softmax at each position.
        hidden: (B, T, H) the last layer's outputs at each position.
        target: (B, T) the next-word ids (y_n, what position n predicts).
        Returns (B, T, V): log(lam * p_cache + (1 - lam) * p_model), in
        ``log_probs``' dtype; positions without history (and all positions
        when lam == 0) get ``log_probs`` back unchanged.
        """
        if log_probs.dim() != 3:
            raise ValueError(f"log_probs must be (B, T, V), got {tuple(log_probs.shape)}")
        return self._run(log_probs, hidden, target)

    def extra_repr(self) -> str:
        extra = ", full_window_only=True" if self.full_window_only else ""
        return f"window={self.window}, theta={self.theta}, lam={self.lam}{extra}"

    # ------------------------------------------------------------ internals

    def _run(self, lp: Tensor, hidden: Tensor, target: Tensor) -> Tensor:
        B, T = lp.shape[:2]
        if hidden.dim() != 3 or hidden.shape[:2] != (B, T):
            raise ValueError(f"hidden must be (B, T, H) = ({B}, {T}, H), got {tuple(hidden.shape)}")
        if tuple(target.shape) != (B, T):
            raise ValueError(f"target must be (B, T) = ({B}, {T}), got {tuple(target.shape)}")
        if self.keys is not None and self.keys.size(0) != B:
            raise ValueError(
                f"batch size changed from {self.keys.size(0)} to {B} while the cache "
                "holds a history; call reset() between streams"
            )
        if self.keys is not None and self.keys.size(2) != hidden.size(2):
            raise ValueError(f"hidden size changed from {self.keys.size(2)} to {hidden.size(2)}; call reset()")

        # Keys and words: [history; this window]; position L + t is query t.
        new_keys = hidden.detach()
        new_words = target.detach().to(torch.long)
        L = self.history_length
        if L:
            keys = torch.cat([self.keys.to(new_keys), new_keys], 1)
            words = torch.cat([self.words.to(new_words.device), new_words], 1)
        else:
            keys, words = new_keys, new_words
        start = self.seen

        self.scored += B * T
        if self.lam == 0.0 or self.window == 0 or T == 0:
            out = lp
        else:
            out = torch.empty_like(lp)
            for t0 in range(0, T, self.chunk_size):
                t1 = min(T, t0 + self.chunk_size)
                out[:, t0:t1] = self._mix(lp[:, t0:t1], hidden[:, t0:t1], keys, words, L, t0, start)

        self._append(keys, words, start + T)
        return out

    def _mix(self, lp, query, keys, words, L, t0, start):
        """Mixed log-probs for the queries t0 .. t0 + c - 1 of the window.

        lp: (B, c, V); query: (B, c, H);
        keys: (B, K, H) and words: (B, K) with K = L + T.
        """
        B, c = query.shape[:2]
        ctype = torch.promote_types(torch.promote_types(lp.dtype, query.dtype), torch.float32)
        device = query.device

        # Only keys that some query of this chunk may see: [L + t0 - window, L + t0 + c - 1).
        k0 = max(0, L + t0 - self.window)
        k1 = L + t0 + c - 1
        pos_q = torch.arange(L + t0, L + t0 + c, device=device).unsqueeze(1)  # (c, 1)
        pos_k = torch.arange(k0, max(k0, k1), device=device).unsqueeze(0)  # (1, K')
        allowed = (pos_k < pos_q) & (pos_k >= pos_q - self.window)  # (c, K')
        has_history = pos_q.squeeze(1) > 0  # (c,)
        if self.full_window_only:
            has_history = has_history & (start + pos_q.squeeze(1) - L > self.window)

        if not bool(has_history.any()):
            return lp
        self.mixed += B * int(has_history.sum())
        k_win = keys[:, k0:k1].to(ctype)
        w_win = words[:, k0:k1]

        scores = torch.bmm(query.to(ctype), k_win.transpose(1, 2)).mul_(self.theta)  # (B, c, K')
        scores.masked_fill_(~allowed, -math.inf)
        norm = torch.logsumexp(scores, 2, keepdim=True)
        norm = norm.masked_fill(torch.isinf(norm), 0.0)  # rows with no key: all weights 0
        attn = (scores - norm).exp_()  # (B, c, K'), each row sums to 1 (or is all 0)

        log_cache = torch.zeros(B, c, lp.size(2), dtype=ctype, device=device)
        log_cache.scatter_add_(2, w_win.unsqueeze(1).expand(B, c, w_win.size(1)), attn)
        log_cache.log_().add_(math.log(self.lam))
        mixed = torch.logaddexp(log_cache, lp.to(ctype) + math.log1p(-self.lam))

        keep = ~has_history.view(1, c, 1)
        return torch.where(keep, lp.to(ctype), mixed).to(lp.dtype)

    def _append(self, keys: Tensor, words: Tensor, seen: int) -> None:
        if self.window == 0:
            self.keys = self.words = None
        else:
            self.keys = keys[:, -self.window :].detach().contiguous()
            self.words = words[:, -self.window :].contiguous()
        self.seen = seen
