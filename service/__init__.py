"""The BentoML service: image upload -> validation -> batched ConvNet inference -> top-k labels."""

import logging

# BentoML's server logging keeps the root logger at WARNING; the service's own INFO lines (model
# loaded, request rejected) go through the same handler.
logging.getLogger(__name__).setLevel(logging.INFO)
