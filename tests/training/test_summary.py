from typer.testing import CliRunner

from training.__main__ import app

# Layer, output shape, parameters: the Keras book's MNIST ConvNet.
EXPECTED_ROWS = [
    ("conv2d (Conv2D)", "(None, 26, 26, 32)", "320"),
    ("max_pooling2d (MaxPooling2D)", "(None, 13, 13, 32)", "0"),
    ("conv2d_1 (Conv2D)", "(None, 11, 11, 64)", "18,496"),
    ("max_pooling2d_1 (MaxPooling2D)", "(None, 5, 5, 64)", "0"),
    ("conv2d_2 (Conv2D)", "(None, 3, 3, 64)", "36,928"),
    ("flatten (Flatten)", "(None, 576)", "0"),
    ("dense (Dense)", "(None, 64)", "36,928"),
    ("dense_1 (Dense)", "(None, 10)", "650"),
]


def test_summary_lists_every_layer_of_the_keras_network() -> None:
    result = CliRunner().invoke(app, ["summary", "mnist"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    rows = [line for line in lines if "(None" in line]
    assert len(rows) == len(EXPECTED_ROWS)
    for line, (layer, shape, params) in zip(rows, EXPECTED_ROWS, strict=True):
        assert line.startswith(layer)
        assert shape in line
        assert line.split()[-1] == params
    assert "Total params: 93,322" in lines
    assert "Trainable params: 93,322" in lines
