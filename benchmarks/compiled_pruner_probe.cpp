// Measurement probe, not part of the library: the `domain`-mode pruner of every pruned layer
// (eqs. 3-8 with the FC on e_d alone, and each layer's sparsity ratio r^l of eq. 9) as ONE C++
// autograd node with hand-written element-wise loops, to measure how far below PyTorch's eager
// operators the step can go (benchmarks/compiled_pruner_probe.py builds and times it).
//
// Same arithmetic and gradient conventions as adasparse/layers/fused_pruning.py `RowsPrune`:
//   z = scale * (e_d W^T + b), scale = alpha (Binarization, Fusion) or 1 (Scaling); s = sigmoid(z)
//   Binarization (eq. 5): pi = [s > eps];  Scaling (eq. 6): pi = beta*s;
//   Fusion (eq. 8):       pi = beta*s if beta*s > eps else 0
//   r^l = 1 - sum(gate^l) / (B * N_l), gate = [pi > 0]
// Backward (straight-through step): du = scale * s(1-s) * dpi/ds-factor, as in factors_backward.
#include <torch/extension.h>

#include <vector>

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

constexpr int64_t kBinarization = 0, kScaling = 1, kFusion = 2;

struct RowsPruneNode : public torch::autograd::Function<RowsPruneNode> {
  static variable_list forward(AutogradContext* ctx, at::Tensor e_d, at::Tensor weight, at::Tensor bias,
                               std::vector<int64_t> widths, int64_t form, double alpha, double beta, double eps) {
    const double scale = form == kScaling ? 1.0 : alpha;
    at::Tensor s = at::addmm(bias, e_d, weight.t(), scale, scale).sigmoid_();
    const int64_t rows = s.size(0), total = s.size(1), layers = static_cast<int64_t>(widths.size());
    const float fbeta = static_cast<float>(beta), feps = static_cast<float>(eps);
    const float* sp = s.data_ptr<float>();
    std::vector<float> kept(total, 0.f);
    variable_list out;
    int64_t start = 0;
    for (int64_t l = 0; l < layers; ++l) {
      const int64_t n = widths[l];
      at::Tensor pi = at::empty({rows, n}, s.options());
      float* pp = pi.data_ptr<float>();
      float* k = kept.data() + start;
      for (int64_t r = 0; r < rows; ++r) {
        const float* srow = sp + r * total + start;
        float* prow = pp + r * n;
        if (form == kFusion) {
          for (int64_t c = 0; c < n; ++c) {
            const float v = fbeta * srow[c];
            const float p = v > feps ? v : 0.f;
            prow[c] = p;
            k[c] += p > 0.f ? 1.f : 0.f;
          }
        } else if (form == kBinarization) {
          for (int64_t c = 0; c < n; ++c) {
            const float p = srow[c] > feps ? 1.f : 0.f;
            prow[c] = p;
            k[c] += p;
          }
        } else {
          for (int64_t c = 0; c < n; ++c) {
            const float p = fbeta * srow[c];
            prow[c] = p;
            k[c] += p > 0.f ? 1.f : 0.f;
          }
        }
      }
      out.push_back(pi);
      start += n;
    }
    at::Tensor ratios = at::empty({layers}, s.options());
    float* rp = ratios.data_ptr<float>();
    start = 0;
    for (int64_t l = 0; l < layers; ++l) {
      double sum = 0.0;
      for (int64_t c = start; c < start + widths[l]; ++c) sum += kept[c];
      rp[l] = static_cast<float>(1.0 - sum / static_cast<double>(rows * widths[l]));
      start += widths[l];
    }
    out.push_back(ratios);
    ctx->save_for_backward({e_d, weight, s});
    ctx->saved_data["widths"] = widths;
    ctx->saved_data["form"] = form;
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["eps"] = eps;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &e_d = saved[0], &weight = saved[1], &s = saved[2];
    const auto widths = ctx->saved_data["widths"].toIntVector();
    const int64_t form = ctx->saved_data["form"].toInt();
    const float alpha = ctx->saved_data["alpha"].toDouble(), beta = ctx->saved_data["beta"].toDouble();
    const float eps = ctx->saved_data["eps"].toDouble();
    const int64_t rows = s.size(0), total = s.size(1), layers = static_cast<int64_t>(widths.size());
    // d r^l / d gate of one entry of layer l: -1 / (B * N_l) (straight-through gate)
    std::vector<float> g_gate(layers, 0.f);
    if (grads[layers].defined() && form != kScaling) {
      const at::Tensor g_ratio = grads[layers].contiguous();
      for (int64_t l = 0; l < layers; ++l)
        g_gate[l] = -g_ratio.data_ptr<float>()[l] / static_cast<float>(rows * widths[l]);
    }
    at::Tensor g_u = at::empty_like(s);
    const float* sp = s.data_ptr<float>();
    float* gp = g_u.data_ptr<float>();
    int64_t start = 0;
    for (int64_t l = 0; l < layers; ++l) {
      const int64_t n = widths[l];
      const at::Tensor g = grads[l].defined() ? grads[l].contiguous() : at::zeros({rows, n}, s.options());
      const float* gl = g.data_ptr<float>();
      const float gg = g_gate[l];
      for (int64_t r = 0; r < rows; ++r) {
        const float* srow = sp + r * total + start;
        const float* grow = gl + r * n;
        float* orow = gp + r * total + start;
        for (int64_t c = 0; c < n; ++c) {
          const float sv = srow[c], ds = sv * (1.f - sv);
          if (form == kScaling) {
            orow[c] = beta * ds * grow[c];
          } else if (form == kBinarization) {
            orow[c] = alpha * ds * (grow[c] + gg);
          } else {
            const float gate = beta * sv > eps ? 1.f : 0.f;
            orow[c] = alpha * ds * (beta * (gate + sv) * grow[c] + gg);
          }
        }
      }
      start += n;
    }
    return {at::mm(g_u, weight), at::mm(g_u.t(), e_d), g_u.sum(0), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::vector<at::Tensor> rows_prune(at::Tensor e_d, at::Tensor weight, at::Tensor bias, std::vector<int64_t> widths,
                                   int64_t form, double alpha, double beta, double eps) {
  TORCH_CHECK(e_d.scalar_type() == at::kFloat && e_d.is_contiguous() && e_d.device().is_cpu(),
              "rows_prune probe: e_d must be a contiguous float32 CPU tensor");
  return RowsPruneNode::apply(e_d, weight, bias, widths, form, alpha, beta, eps);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("rows_prune", &rows_prune); }
