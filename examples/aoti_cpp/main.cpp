// Serve an AOTInductor package exported by `mtl-deploy export CKPT --format aoti` from C++:
// load model.aoti.pt2, run a batch, print each task's output. No Python at run time.
// Usage: aoti_predict EXPORT_DIR/model.aoti.pt2 ROWS FEATURES
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: aoti_predict MODEL.aoti.pt2 ROWS FEATURES\n";
    return 2;
  }
  torch::inductor::AOTIModelPackageLoader loader(argv[1]);
  const int64_t rows = std::atoll(argv[2]), features = std::atoll(argv[3]);
  // The same deterministic rows the test feeds the Python side: x[i][j] = sin(i * features + j).
  torch::Tensor x = torch::arange(rows * features, torch::kFloat32).sin().reshape({rows, features});
  std::vector<torch::Tensor> outputs = loader.run({x});
  for (size_t i = 0; i < outputs.size(); ++i) {
    torch::Tensor flat = outputs[i].contiguous().flatten();
    std::cout << "output " << i << std::setprecision(9);
    for (int64_t k = 0; k < flat.numel(); ++k) std::cout << " " << flat[k].item<float>();
    std::cout << "\n";
  }
  return 0;
}
