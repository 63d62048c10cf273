"""Named constants of the stable product unit, with where each value comes from."""

import math

# Floor added to the positive input before the log: log(0) = -inf would turn the clip's zero
# gradient into 0 * inf = NaN. 1e-7 is the constant public PURe re-implementations use.
POSITIVITY_EPS = 1e-7

# Log-domain clip of the PU input, |log p| <= 6. After the preceding norm the input is ~N(0, 1),
# so log(softplus(x)) only reaches -6 at x ~ -6 (a 6-sigma outlier) and +6 at x ~ 403: the clip
# bounds the aggregate by 6 * ||w||_1 without touching typical activations.
LOG_INPUT_CLIP = 6.0

# Log-domain clip of the aggregate before exp: exp(10) = 22026 stays 3x below the fp16 maximum
# (65504 = exp(11.09)), so the PU output never overflows under CUDA fp16 autocast.
LOG_OUTPUT_CLIP = 10.0

# Exponent weights start Kaiming-uniform with a = 5, the PURe paper's "scaling factor 5";
# bound = sqrt(6 / ((1 + a^2) fan_in)), so the log-domain aggregate starts with std ~ 0.28 rms(z).
EXPONENT_INIT_A = 5.0

# Initial threshold of PURe's hard positivity floor: softplus(0) = log 2 ~ 0.693.
THRESHOLD_INIT = 0.0

# "fused": the autograd Function of fused.py (saves x, y and a bool mask; the default, tested equal
# to the reference); "reference": autograd on the plain composition of functional.py.
IMPLEMENTATION_CHOICES = ("fused", "reference")
DEFAULT_IMPLEMENTATION = "fused"

FP16_MAX_LOG = math.log(65504.0)
assert LOG_OUTPUT_CLIP < FP16_MAX_LOG, "the output clip must keep exp() inside float16"
