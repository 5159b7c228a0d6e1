"""Pretraining examples: instance layout and dynamic MLM masking.

Instances (google-research/bert's sentence pairs, five integers each: token ranges into the
shards) are made by bertcore.data.instances; `assemble` lays them out as rows.

Masking happens per batch (dynamic, like RoBERTa), fully vectorised over [B, L]:
15% of the real, non-special tokens (at most P = max_predictions), of which 80% become [MASK],
10% a random token and 10% stay unchanged (settable: ELECTRA's pretraining uses 85/0/15).
"""

from __future__ import annotations

import numpy as np

# Instances live in bertcore.data.instances; re-exported for the callers that import them from here.
from bertcore.data.instances import A_LEN, A_START, B_LEN, B_START, LABEL, create_instances

__all__ = ["A_START", "A_LEN", "B_START", "B_LEN", "LABEL", "create_instances", "assemble",
           "mask_tokens"]


def assemble(tokens: np.ndarray, instances: np.ndarray, seq_len: int, cls_id: int, sep_id: int,
             pad_id: int, nsp: bool = True) -> dict[str, np.ndarray]:
    """Lay instances out as `[CLS] A [SEP] B [SEP] [PAD]...` rows, vectorised.

    Returns input_ids, token_type_ids, attention_mask (int32 [B, L]) before masking.
    """
    a_start, a_len, b_start, b_len = (instances[:, k:k + 1] for k in range(4))
    pos = np.arange(seq_len, dtype=np.int64)[None, :]                      # (1, L)
    in_a = (pos >= 1) & (pos <= a_len)
    b_first = a_len + 2
    in_b = (pos >= b_first) & (pos < b_first + b_len)
    src = np.where(in_a, a_start + pos - 1, np.where(in_b, b_start + pos - b_first, 0))
    ids = np.asarray(tokens[src.ravel()], dtype=np.int32).reshape(src.shape)  # (B, L)
    total = a_len + 2 + np.where(b_len > 0, b_len + 1, 0) if nsp else a_len + 2
    ids = np.where(in_a | in_b, ids, pad_id)
    ids[:, 0] = cls_id
    ids = np.where(pos == a_len + 1, sep_id, ids)
    if nsp:
        ids = np.where((pos == total - 1) & (b_len > 0), sep_id, ids)
    attention_mask = (pos < total).astype(np.int32)
    token_type_ids = ((pos >= b_first) & (pos < total)).astype(np.int32)
    return {"input_ids": ids.astype(np.int32), "token_type_ids": token_type_ids,
            "attention_mask": attention_mask}


def mask_tokens(input_ids: np.ndarray, attention_mask: np.ndarray, uniforms: np.ndarray,
                replace_u: np.ndarray, random_pick: np.ndarray, *, is_special: np.ndarray,
                is_continuation: np.ndarray | None, replacement_ids: np.ndarray, mask_id: int,
                mask_prob: float, max_predictions: int, mask_replace_prob: float = 0.8,
                random_replace_prob: float = 0.1) -> dict[str, np.ndarray]:
    """Choose and corrupt the MLM targets of a batch.

    The random numbers come in as arrays (`uniforms` [B, L] selection scores, `replace_u` and
    `random_pick` [B, P]) so the caller decides how they are seeded: the iterator draws them for
    the *global* batch, which is why a row's masks do not depend on the number of ranks.
    `is_continuation` (vocab-sized bool) turns on whole-word masking.
    """
    B, L = input_ids.shape
    P = max_predictions
    cand = (attention_mask > 0) & ~is_special[input_ids]                    # (B, L)
    n_cand = cand.sum(axis=1)
    n_pred = np.minimum(np.maximum(np.rint(n_cand * mask_prob), 1), P).astype(np.int64)
    n_pred = np.where(n_cand > 0, n_pred, 0)

    if is_continuation is None:
        score = np.where(cand, uniforms, 2.0)
        order = np.argsort(score, axis=1, kind="stable")[:, :P]              # (B, P) best first
        take = np.arange(P)[None, :] < n_pred[:, None]
    else:
        # Whole words: every piece of a word gets the score of the word's first piece, so the
        # sort keeps words together; take whole words while they fit in n_pred.
        starts = cand & ~is_continuation[input_ids]
        idx = np.where(starts | ~cand, np.arange(L)[None, :], 0)
        word = np.maximum.accumulate(idx, axis=1)                            # (B, L) word start
        score = np.where(cand, np.take_along_axis(uniforms, word, axis=1) + word * 1e-9, 2.0)
        order_full = np.argsort(score, axis=1, kind="stable")
        w_sorted = np.take_along_axis(np.where(cand, word, -1), order_full, axis=1)
        new_word = np.ones_like(w_sorted, dtype=bool)
        new_word[:, 1:] = w_sorted[:, 1:] != w_sorted[:, :-1]
        count = np.arange(1, L + 1)[None, :]
        # Tokens taken before the word ends: the count at the word's last piece.
        word_id = np.cumsum(new_word, axis=1) - 1
        end_count = np.zeros((B, L), dtype=np.int64)
        np.maximum.at(end_count, (np.arange(B)[:, None], word_id), np.broadcast_to(count, (B, L)))
        fits = np.take_along_axis(end_count, word_id, axis=1) <= n_pred[:, None]
        fits &= np.take_along_axis(cand, order_full, axis=1)
        order = order_full[:, :P]
        take = fits[:, :P]

    # Positions in ascending order, unused slots at the end (position 0, weight 0).
    positions = np.where(take, order, L)
    positions = np.sort(positions, axis=1)
    weights = (positions < L).astype(np.float32)
    positions = np.where(positions < L, positions, 0).astype(np.int32)
    rows = np.arange(B)[:, None]
    masked_ids = np.where(weights > 0, input_ids[rows, positions], 0).astype(np.int32)

    # mask_replace_prob [MASK], random_replace_prob a random token, the rest unchanged (BERT:
    # 80/10/10; ELECTRA: 85/0/15).
    random_tok = replacement_ids[random_pick % len(replacement_ids)]
    keep_from = mask_replace_prob + random_replace_prob
    new = np.where(replace_u < mask_replace_prob, mask_id,
                   np.where(replace_u < keep_from, random_tok, masked_ids))
    out_ids = input_ids.copy()
    live = weights > 0
    out_ids[np.broadcast_to(rows, positions.shape)[live], positions[live]] = new[live]
    return {"input_ids": out_ids, "masked_positions": positions, "masked_ids": masked_ids,
            "masked_weights": weights}
