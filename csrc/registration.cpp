// The mtl_deploy operator library: every schema, declared once.  Device
// implementations register themselves next to their kernels (inner_loop.cpp,
// multihead_linear.cpp); fake kernels and autograd live in Python
// (mtl_deploy/ops/registration.py).  Also embeds the hash of the sources this
// binary was built from, which the loader compares before trusting a build.
#include <Python.h>

#include <torch/csrc/stable/library.h>

#ifndef MTL_DEPLOY_SOURCE_HASH
#define MTL_DEPLOY_SOURCE_HASH "unknown"
#endif

// Read from the file's bytes, never executed: the loader decides whether the
// binary is current before loading it.
extern "C" __attribute__((used)) const char mtl_deploy_source_hash[] =
    "MTL_DEPLOY_SOURCE_HASH=" MTL_DEPLOY_SOURCE_HASH ";";

STABLE_TORCH_LIBRARY(mtl_deploy, m) {
  // loss: 0 mse, 1 cross_entropy; activation: 0 relu, 1 tanh; lr is either
  // one tensor per parameter (Meta-SGD) or empty with lr_scalar used;
  // aux_mode: 0 nothing, 1 per-task gradient sums (T, P), 2 the parameter
  // trajectory (T, S, P) that inner_loop_backward consumes.
  m.def(
      "inner_loop(Tensor[] params, Tensor x, Tensor y, Tensor[] lr, float lr_scalar, "
      "int steps, int loss, int activation, int aux_mode) -> (Tensor[], Tensor)");
  m.def(
      "inner_loop_backward(Tensor[] params, Tensor x, Tensor y, Tensor[] lr, "
      "float lr_scalar, int steps, int loss, int activation, Tensor trajectory, "
      "Tensor[] grad_adapted) -> (Tensor[], Tensor[])");
  // The whole MAML meta-step: adapt on the support set as inner_loop does, then
  // the mean query loss over tasks and its gradient with respect to params and
  // (Meta-SGD) lr; order: 1 first-order, 2 exact.  Returns (loss, grad_params,
  // grad_lr), grad_lr empty when lr is.  Not differentiable itself.
  m.def(
      "maml_step(Tensor[] params, Tensor support_x, Tensor support_y, Tensor query_x, "
      "Tensor query_y, Tensor[] lr, float lr_scalar, int steps, int loss, int activation, "
      "int order) -> (Tensor, Tensor[], Tensor[])");
  m.def("multihead_linear(Tensor x, Tensor weight, Tensor bias, Tensor? head_ids) -> Tensor");
  m.def(
      "multihead_linear_routed_backward(Tensor grad_out, Tensor x, Tensor weight, "
      "Tensor head_ids) -> (Tensor, Tensor, Tensor)");
}

// Importable as a Python module (mtl_deploy._C) with no Python-visible
// content: importing it runs the registrations above.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
