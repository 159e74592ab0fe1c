"""The BentoML service: image upload -> validation -> batched ConvNet inference -> top-k labels."""
