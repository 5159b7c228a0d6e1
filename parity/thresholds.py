"""The agreement bars between torchbert, jaxbert and Hugging Face: the one place they live.

`python -m parity.check`, tests/parity/ and the model tests import these; docs/design.md ("Quality
bars") says what each bar is for and points here for the numbers. All comparisons are fp32 on CPU
with dropout off unless the name says otherwise.
"""

# Forward pass: hidden states, pooled output, sparse and dense MLM logits, NSP logits.
# max |a - b| over every element, twin vs twin and twin vs transformers.BertForPreTraining.
FORWARD_MAX_ABS = 1e-5

# Loss: |l_a - l_b| / |l_a|.
LOSS_REL = 1e-6

# Gradients, per tensor: ||g_torch - g_jax|| / ||g_torch||; the row reports the worst tensor.
GRAD_REL = 1e-4
# ... except tensors whose gradient is zero in exact arithmetic, where both twins return only
# rounding noise and a ratio of two noises means nothing: the attention *key* bias (softmax is
# invariant to adding q.b_k to every logit of a query). A tensor whose torch gradient norm is
# below GRAD_ZERO_FLOOR x the global gradient norm counts as zero, and passes only if the jax
# gradient is below that floor as well (they agree that it is zero).
GRAD_ZERO_FLOOR = 1e-7

# ELECTRA's generator samples (bertcore.model.sampling: Gumbel-max, the noise hashed from one seed
# per masked slot): tokens that differ between a twin and the numpy reference on the same logits,
# between the twins on their own generators' logits, and replaced-token labels that differ. None:
# the noise is integer arithmetic, and the argmax moves only where the two best perturbed scores
# are within float rounding (~1e-6) of each other, about one slot in a million.
SAMPLE_MISMATCHES = 0

# One full AdamW step (weight-decay mask, global-norm clipping, schedule): max |p_a - p_b| over
# every updated parameter.
ADAMW_STEP_MAX_ABS = 1e-6

# Training curves from the same init and batches: |l_a - l_b| / |l_a| at every step. Measured
# about 1e-6 (docs/parity.md); the bar is tight enough that an off-by-one step count (about 6e-4
# on tiny) fails it.
CURVE_REL = 1e-5

# bf16 compute (--dtype bf16: torch autocast, jax module dtype; fp32 parameters, AdamW state and
# loss) from the same init and batches: |l_a - l_b| / |l_a| at every step. bfloat16 keeps 8
# significant bits, a unit roundoff of 2^-9 ~ 1.95e-3 per element; the loss averages many
# rounded terms, so the twins' curves differ far less (docs/parity.md has the measured
# differences). The bar is one bf16 unit roundoff, well above the measured worst, while a wrong
# cast (the loss, softmax or LayerNorm statistics in bf16) costs about that much on its own, at
# the first step.
BF16_CURVE_REL = 2e-3

# Cross-framework resume (N/2 steps in one twin, convert the full state, N/2 in the other) against
# N steps in the first twin: |l_a - l_b| / |l_a| at every resumed step. The curve's bar: a
# resume is exact up to the twins' rounding.
RESUME_REL = 1e-5

# Dropout on: the twins draw different masks (torch's generator reseeded per step vs JAX's threefry
# keys; one rule, bertcore/model/dropout.py, different bits), so only statistics can agree. With
# paired per-step differences d_s = l_torch(s) - l_jax(s) on the same batches, the mean difference
# must be within DROPOUT_Z standard errors:
#   |mean(d)| <= DROPOUT_Z * std(d) / sqrt(n_eff),  n_eff = n (1 - r1) / (1 + r1)
# where r1 (clipped to [0, 0.9]) is the lag-1 autocorrelation of d, since neighbouring steps of two
# diverging trajectories are not independent. Z = 4 makes a false alarm about 1 in 16,000 runs.
# ELECTRA's bf16 curves are compared the same way: the generator samples from bf16 logits that
# differ between the twins by about a bf16 unit, so a sample (and a replaced-token label) differs
# now and then, after which the trajectories part as dropout's do (BF16_CURVE_REL holds at the
# first step).
DROPOUT_Z = 4.0
# ... and dropout must really be on in both twins: their dropout-on curve must differ from their
# own dropout-off curve by more than this (relative, at the worst step), or the row above has no
# teeth.
DROPOUT_ACTIVE_REL = 1e-3
