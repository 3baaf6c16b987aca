"""Triton model repositories: the config parses with Triton's own model-config schema and
matches the ONNX graph's inputs and outputs."""

import onnx
import pytest
from google.protobuf import text_format

import mtl_deploy

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] is a dev extra")


def parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_repository_layout_and_config_match_the_graph(checkpoint_dir, tmp_path):
    report = mtl_deploy.export(checkpoint_dir, tmp_path / "repo", format="triton", triton_name="demo")
    assert report.parity.passed
    model_dir = tmp_path / "repo" / "demo"
    config = parse(model_dir / "config.pbtxt")
    graph = onnx.load(str(model_dir / "1" / "model.onnx")).graph
    assert config.name == "demo" and config.backend == "onnxruntime" and config.max_batch_size > 0
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert {p: v.string_value for p, v in config.parameters.items()} == {"intra_op_thread_count": "1",
                                                                         "inter_op_thread_count": "1"}
    for declared, actual in [(config.input, graph.input), (config.output, graph.output)]:
        assert [t.name for t in declared] == [v.name for v in actual]
        for tensor, value in zip(declared, actual):
            assert list(tensor.dims) == [d.dim_value for d in value.type.tensor_type.shape.dim[1:]]
            assert tensor.data_type == model_config_pb2.TYPE_FP32


def test_routed_repository_declares_task_id(tmp_path):

    from mtl_deploy.data import TaskSpec
    from mtl_deploy.models import MultiTaskModel

    model = MultiTaskModel((4,), [TaskSpec("a", "regression", 2), TaskSpec("b", "regression", 2)],
                           {"type": "mlp", "hidden": [5]}).eval()
    mtl_deploy.export(model, tmp_path / "repo", format="triton", triton_name="routed", routed=True)
    config = parse(tmp_path / "repo" / "routed" / "config.pbtxt")
    task_id = config.input[1]
    assert task_id.name == "task_id" and task_id.data_type == model_config_pb2.TYPE_INT64
    assert list(task_id.dims) == [1] and list(task_id.reshape.shape) == []
