"""spgim.serving.native: the Python-free Triton repository (ONNX Runtime models, their ensemble, TensorRT configs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loopback import free_port
from requirements import not_this_machine

from spgim.errors import SpgimError
from spgim.serving.native import ENSEMBLE_NAME, write_native_repository
from spgim.serving.server import TritonServer, pytriton_root

WORK_HW = (64, 96)  # the working image's (height, width): multiples of 32 inside the export's 64..512 profile
FRAME_HW = (150, 200)  # the frame the upsampling reaches
TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 10: "TYPE_FP16"}  # ONNX element types the export uses


def _parsed(path: Path) -> Any:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def repository(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("native") / "models"
    write_native_repository(model, out)
    return out


def _graph_model(repository: Path, name: str) -> Any:
    import onnx

    return onnx.load(str(repository / name / "1" / "model.onnx"))


def _graph(repository: Path, name: str) -> Any:
    return _graph_model(repository, name).graph


def _type_name(value: int) -> str:
    """A config's data type enum as its name (``"TYPE_FP32"``)."""
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.DataType.Name(value)


def _onnx_io(value: Any) -> tuple[str, str, list[int]]:
    tensor = value.type.tensor_type
    return (
        value.name,
        TRITON_TYPES[tensor.elem_type],
        [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim],
    )


def test_every_config_parses_as_a_model_config(model: Path, repository: Path) -> None:
    folders = write_native_repository(model, repository)  # again into the same folder: replaced, same result
    names = {f.name for f in folders}
    assert names == {"spgim_spd", "spgim_spgm", "spgim_upsample", ENSEMBLE_NAME, "spgim_spd_trt", "spgim_spgm_trt"}
    platforms = {}
    for folder in folders:
        config = _parsed(folder / "config.pbtxt")
        assert config.name == folder.name and (folder / "1").is_dir()
        platforms[folder.name] = config.platform
        assert all(list(t.dims) for t in (*config.input, *config.output))
    assert platforms["spgim_spd"] == platforms["spgim_upsample"] == "onnxruntime_onnx"
    assert platforms[ENSEMBLE_NAME] == "ensemble" and platforms["spgim_spgm_trt"] == "tensorrt_plan"
    for name in ("spgim_spd_trt", "spgim_spgm_trt"):
        readme = (repository / name / "README.txt").read_text()
        assert "--formats" in readme and "engine" in readme and "plugins=" in readme
        assert not (repository / name / "1" / "model.plan").exists()
        assert _parsed(repository / name / "config.pbtxt").max_batch_size == 1  # spgim's engines: batch profile 1
    assert "com.microsoft" in {o.domain for o in _graph_model(repository, "spgim_spgm").opset_import}


def test_configs_match_their_graphs(repository: Path) -> None:
    for name in ("spgim_spd", "spgim_spgm", "spgim_upsample"):
        config = _parsed(repository / name / "config.pbtxt")
        graph = _graph(repository, name)
        assert config.max_batch_size == 8
        for declared, values in ((config.input, graph.input), (config.output, graph.output)):
            assert [t.name for t in declared] == [v.name for v in values]
            for tensor, value in zip(declared, values, strict=True):
                graph_name, data_type, shape = _onnx_io(value)
                assert _type_name(tensor.data_type) == data_type
                assert len(tensor.dims) == len(shape) - 1  # the batch axis is max_batch_size's
                assert all(d == g or g == -1 for d, g in zip(tensor.dims, shape[1:], strict=True)), (graph_name, shape)


def test_ensemble_wires_the_graphs_by_their_tensor_names(repository: Path) -> None:
    ensemble = _parsed(repository / ENSEMBLE_NAME / "config.pbtxt")
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["spgim_spd", "spgim_spgm", "spgim_upsample"]
    available = {t.name: (t.data_type, len(t.dims)) for t in ensemble.input}
    for step in steps:
        model = _parsed(repository / step.model_name / "config.pbtxt")
        graph = _graph(repository, step.model_name)
        assert sorted(step.input_map) == sorted(v.name for v in graph.input)
        assert sorted(step.output_map) == sorted(v.name for v in graph.output)
        for tensor in model.input:  # each input is fed by a tensor already there, of its type and rank
            assert available[step.input_map[tensor.name]] == (tensor.data_type, len(tensor.dims)), tensor.name
        for tensor in model.output:
            available[step.output_map[tensor.name]] = (tensor.data_type, len(tensor.dims))
    assert [t.name for t in ensemble.input] == ["image", "frame"]
    assert [(t.name, list(t.dims)) for t in ensemble.output] == [("alpha", [1, -1, -1]), ("alpha_full", [1, -1, -1])]
    assert all(available[t.name] == (t.data_type, len(t.dims)) for t in ensemble.output)


def _inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    height, width = WORK_HW
    return {
        "image": rng.random((2, 3, height, width), dtype=np.float32),
        "frame": rng.integers(0, 256, (2, *FRAME_HW, 3), dtype=np.uint8),
    }


def _local_chain(model_dir: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The export's own graphs in ONNX Runtime, chained by hand: SPD, SPGM, upsampling."""
    import onnxruntime as ort

    def session(name: str) -> Any:
        return ort.InferenceSession(str(model_dir / name), providers=["CPUExecutionProvider"])

    image = inputs["image"]
    mask, r2, r3, r4 = session("spd.onnx").run(None, {"image": image})
    (alpha,) = session("spgm.onnx").run(None, {"image": image, "mask": mask, "r2": r2, "r3": r3, "r4": r4})
    (alpha_full,) = session("upsample.onnx").run(None, {"alpha": alpha, "image": image, "frame": inputs["frame"]})
    return {"alpha": alpha, "alpha_full": alpha_full}


def _ensemble_in_process(repository: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ensemble's config executed step by step with ONNX Runtime on the repository's model.onnx files."""
    import onnxruntime as ort

    ensemble = _parsed(repository / ENSEMBLE_NAME / "config.pbtxt")
    tensors = dict(inputs)
    for step in ensemble.ensemble_scheduling.step:
        path = repository / step.model_name / "1" / "model.onnx"
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {name: tensors[source] for name, source in step.input_map.items()}
        names = [o.name for o in session.get_outputs()]
        for name, value in zip(names, session.run(names, feeds), strict=True):
            tensors[step.output_map[name]] = value
    return {t.name: tensors[t.name] for t in ensemble.output}


def test_ensemble_steps_reproduce_the_graphs_chained_by_hand(model: Path, repository: Path) -> None:
    inputs = _inputs()
    expected = _local_chain(model, inputs)
    produced = _ensemble_in_process(repository, inputs)
    assert produced["alpha_full"].shape == (2, 1, *FRAME_HW)
    for name, value in expected.items():
        np.testing.assert_allclose(produced[name], value, atol=1e-6)


def test_a_folder_that_is_not_an_export_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SpgimError, match="does not exist"):
        write_native_repository(tmp_path / "nowhere", tmp_path / "models")


def _onnxruntime_backend() -> Path:
    """The nvidia-pytriton wheel's backend folder, where it has the onnxruntime backend; else the test skips."""
    backends = pytriton_root() / "tritonserver" / "backends"
    if not (backends / "onnxruntime").is_dir():
        present = ", ".join(sorted(p.name for p in backends.iterdir())) if backends.is_dir() else "none"
        not_this_machine(
            f"this tritonserver build ({backends}) has no onnxruntime backend (backends: {present}); "
            "the native flavour is validated offline only"
        )
    return backends


class _WheelBackendsServer(TritonServer):
    """A TritonServer over the wheel's own backend folder (the onnxruntime backend), not the Python one alone."""

    def __init__(self, repository: Path, backends: Path, **options: Any) -> None:
        super().__init__(repository, **options)
        self.wheel_backends = backends

    def command(self, binary: Path, backends: Path) -> list[str]:
        return [
            f"--backend-directory={self.wheel_backends}" if part.startswith("--backend-directory=") else part
            for part in super().command(binary, backends)
        ]


@pytest.mark.slow
def test_served_ensemble_matches_onnxruntime(model: Path, repository: Path, tmp_path: Path) -> None:
    backends = _onnxruntime_backend()
    import tritonclient.grpc as triton

    inputs = _inputs(seed=1)
    expected = _local_chain(model, inputs)
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    with _WheelBackendsServer(repository, backends, log_path=tmp_path / "tritonserver.log", **ports) as server:
        client = triton.InferenceServerClient(server.grpc_url)
        requests = []
        for name, value in inputs.items():
            request = triton.InferInput(name, list(value.shape), "FP32" if value.dtype == np.float32 else "UINT8")
            request.set_data_from_numpy(value)
            requests.append(request)
        result = client.infer(ENSEMBLE_NAME, requests)
        for name, value in expected.items():
            np.testing.assert_allclose(result.as_numpy(name), value, atol=1e-5)
