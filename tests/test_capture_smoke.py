import torch

import zfwidgets as zf


def test_capture_records_conv_output():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(inplace=True))
    x = torch.randn(1, 3, 8, 8)
    with zf.capture(m) as cap:
        m(x)
    assert torch.allclose(cap.activations["0"], m[0](x))
