"""The names users rely on (DESIGN's public contract) exist and stay what they are."""

import inspect



def test_top_level_functions():
    import mtl_deploy.exporters  # importing the subpackage must not shadow the function

    for name in ["save", "load", "adapt", "export"]:
        assert callable(getattr(mtl_deploy, name)), name
    assert mtl_deploy.export is mtl_deploy.exporters.export
    assert list(inspect.signature(mtl_deploy.adapt).parameters) == ["model_or_path", "support_x", "support_y",
                                                                    "steps", "lr", "task"]


def test_kernel_contract():
    from mtl_deploy import ops

    assert ops.backend() in ("cpp", "reference")
    for name in ["inner_loop", "multihead_linear"]:
        fast, reference = getattr(ops, name), getattr(ops, f"{name}_reference")
        assert inspect.signature(fast).parameters.keys() == inspect.signature(reference).parameters.keys()
