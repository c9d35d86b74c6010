"""The dataflow graph: one traced call, array identity, fan-out, merges, reuse, multiple outputs,
and raw-array operations reported by name."""
import numpy as np
import pytest

from minicompress import models, nn
from minicompress.nn.graph import Source, trace_graph


def test_resnet_block_graph_has_the_fan_out_and_the_merge():
    block = models.BasicBlock(4, 4, rng=0)
    g = trace_graph(block, np.zeros((1, 4, 5, 5), np.float32))
    assert [n.name for n in g.nodes] == ["conv1", "bn1", "relu", "conv2", "bn2", "add_relu"]
    assert g.consumers(Source(-1)) == [(0, 0), (5, 1)]          # x feeds conv1 and the shortcut
    add = g.nodes[5]
    assert add.inputs == [Source(4), Source(-1)] and add.out_shapes == [(1, 4, 5, 5)]
    assert g.outputs == [Source(5)]


def test_whole_models_trace_and_shapes_follow():
    g = trace_graph(models.resnet18(num_classes=3, rng=0), np.zeros((1, 3, 32, 32), np.float32))
    assert sum(type(n.module).__name__ == "FloatFunctional" for n in g.nodes) == 8
    assert [n.name for n in g.nodes[-2:]] == ["fc", "dequant"] and g.nodes[-1].out_shapes == [(1, 3)]
    g = trace_graph(models.mobilenet_v2(width_mult=0.5, num_classes=2, rng=0), np.zeros((1, 3, 32, 32), np.float32))
    downsample = [n for n in g.nodes if n.name == "features.2.conv.0.0"][0]
    assert downsample.in_shapes == [(1, 8, 16, 16)]


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Conv2d(1, 4, 3, padding=1, rng=0)
        self.cls = nn.Conv2d(4, 2, 1, rng=0)
        self.box = nn.Conv2d(4, 4, 1, rng=0)
        self.ff = nn.FloatFunctional()

    def forward(self, x):
        h = self.trunk(x)
        return self.cls(h), self.ff.add_scalar(self.box(h), 1.0)


def test_multiple_outputs_and_float_functional_are_nodes():
    g = trace_graph(TwoHeads(), np.zeros((2, 1, 4, 4), np.float32))
    assert [n.name for n in g.nodes] == ["trunk", "cls", "box", "ff"]
    assert g.consumers(Source(0)) == [(1, 0), (2, 0)] and g.outputs == [Source(1), Source(3)]


class RawAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3, rng=0), nn.Linear(3, 3, rng=1)

    def forward(self, x):
        return self.b(self.a(x) + x)


def test_a_raw_array_operation_is_reported_by_the_module_that_reads_it():
    with pytest.raises(ValueError, match=r"trace: input 0 of 'b' \(Linear\(in_features=3.*produced by no traced module"):
        trace_graph(RawAdd(), np.zeros((1, 3), np.float32))
    model = nn.Sequential(nn.Linear(3, 3, rng=0))
    model.training = True
    trace_graph(model, np.zeros((1, 3), np.float32))
    assert model.training and not model[0].forward_hooks()    # modes and hooks as they were


class ReusedRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.relu, self.add = nn.Conv2d(2, 2, 1, rng=0), nn.ReLU(), nn.Add()

    def forward(self, x):
        return self.relu(self.add(self.relu(self.conv(x)), x))


def test_a_module_called_twice_is_two_nodes():
    g = trace_graph(ReusedRelu(), np.zeros((1, 2, 3, 3), np.float32))
    assert [n.name for n in g.nodes] == ["conv", "relu", "add", "relu#2"] and g.nodes[3].call == 2
    assert g.outputs == [Source(3)] and g.nodes[2].inputs == [Source(1), Source(-1)]
