/// @file test_embedding_grad.cpp
/// @brief Embedding lookup, broadcast row add (position embeddings) and patchify / unpatchify,
///        forward and backward: the double reference against finite differences (size-1 dims,
///        repeated and unused ids), the CPU ops against the float reference on strided views with
///        guard regions, accumulation into non-zero parameter gradients, thread-count
///        determinism, and argument errors (an out-of-range id names itself and V).
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "cpu/guarded.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/cpu/embedding.hpp"
#include "qlip/cpu/patchify.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/reference/embedding.hpp"
#include "qlip/reference/patchify.hpp"

namespace qlip {
namespace {

using test::fill_normal;
using test::Guarded;
using test::kAllLayouts;
using test::span_of;

constexpr float kSentinel = -77.5f;

/// ids[m] = (a·m + b) mod V: repeats once M > V, and leaves rows unused when a and V share factors.
Tensor<std::int32_t, 1> make_ids(std::int64_t m, std::int64_t vocab, std::int64_t a, std::int64_t b) {
  Tensor<std::int32_t, 1> ids({m});
  for (std::int64_t i = 0; i < m; ++i) ids(i) = static_cast<std::int32_t>((a * i + b) % vocab);
  return ids;
}

TEST(EmbeddingGrad, ReferenceMatchesFiniteDifferences) {
  struct Case {
    std::int64_t vocab, dim, m, a, b;
  };
  // {1,1,1}: size-1 dims; {6,3,9,2,1}: ids 1,3,5 repeated, rows 0,2,4 unused; {5,4,3,1,2}: no repeats.
  std::uint64_t seed = 50;
  for (const Case& c : {Case{1, 1, 1, 1, 0}, Case{6, 3, 9, 2, 1}, Case{5, 4, 3, 1, 2}, Case{4, 2, 0, 1, 0}}) {
    SCOPED_TRACE(::testing::Message() << "V" << c.vocab << " D" << c.dim << " M" << c.m);
    const Tensor<std::int32_t, 1> ids = make_ids(c.m, c.vocab, c.a, c.b);
    Tensor<double, 2> table({c.vocab, c.dim}), dout({c.m, c.dim}), out({c.m, c.dim}), dtable({c.vocab, c.dim});
    fill_normal(table, ++seed);
    fill_normal(dout, ++seed);
    reference::embedding_backward<double>(ids.view(), dout.view(), dtable.view());  // dtable starts at 0
    auto loss = [&] {
      reference::embedding<double>(table.view(), ids.view(), out.view());
      return test::weighted_sum(dout, out);
    };
    EXPECT_TRUE(test::check_gradients(loss, {{"table", span_of(table), span_of(dtable)}}));
  }
}

TEST(EmbeddingGrad, AddRowsBroadcastReferenceMatchesFiniteDifferences) {
  struct Case {
    std::int64_t batch, n, dim;
  };
  std::uint64_t seed = 60;
  for (const Case& c : {Case{1, 1, 1}, Case{3, 4, 5}, Case{2, 7, 3}}) {
    SCOPED_TRACE(::testing::Message() << "B" << c.batch << " N" << c.n << " D" << c.dim);
    Tensor<double, 3> x({c.batch, c.n, c.dim}), dy({c.batch, c.n, c.dim}), y({c.batch, c.n, c.dim});
    Tensor<double, 2> table({c.n, c.dim}), dtable({c.n, c.dim});
    fill_normal(x, ++seed);
    fill_normal(table, ++seed);
    fill_normal(dy, ++seed);
    reference::add_rows_broadcast_backward<double>(dy.view(), dtable.view());
    auto loss = [&] {
      for (std::int64_t i = 0; i < x.numel(); ++i) y.data()[i] = x.data()[i];
      reference::add_rows_broadcast<double>(y.view(), table.view());
      return test::weighted_sum(dy, y);
    };
    // The gradient with respect to x is dy itself (the op documents that nothing is computed).
    EXPECT_TRUE(
        test::check_gradients(loss, {{"x", span_of(x), span_of(dy)}, {"table", span_of(table), span_of(dtable)}}));
  }
}

struct PatchCase {
  std::int64_t b, c, h, w;
  int p;
};
constexpr PatchCase kFdPatchCases[] = {{1, 1, 1, 1, 1}, {2, 3, 4, 6, 2}, {1, 2, 6, 3, 3}};

TEST(PatchifyGrad, ReferenceMatchesFiniteDifferences) {
  std::uint64_t seed = 70;
  for (const PatchCase& pc : kFdPatchCases) {
    SCOPED_TRACE(::testing::Message() << "B" << pc.b << " C" << pc.c << " " << pc.h << "x" << pc.w << " p" << pc.p);
    const std::int64_t n = (pc.h / pc.p) * (pc.w / pc.p), k = pc.c * pc.p * pc.p;
    Tensor<double, 4> img({pc.b, pc.c, pc.h, pc.w}), dimg({pc.b, pc.c, pc.h, pc.w}), img_out(img.shape());
    Tensor<double, 3> patches({pc.b, n, k}), dpatches({pc.b, n, k}), patches_out(patches.shape());
    fill_normal(img, ++seed);
    fill_normal(patches, ++seed);
    fill_normal(dimg, ++seed);
    fill_normal(dpatches, ++seed);
    // patchify: L = Σ dpatches ⊙ patchify(img), ∂L/∂img = patchify_backward(dpatches).
    Tensor<double, 4> grad_img(img.shape());
    reference::patchify_backward<double>(dpatches.view(), pc.p, grad_img.view());
    auto loss_p = [&] {
      reference::patchify<double>(img.view(), pc.p, patches_out.view());
      return test::weighted_sum(dpatches, patches_out);
    };
    EXPECT_TRUE(test::check_gradients(loss_p, {{"img", span_of(img), span_of(grad_img)}}));
    // unpatchify: L = Σ dimg ⊙ unpatchify(patches), ∂L/∂patches = unpatchify_backward(dimg).
    Tensor<double, 3> grad_patches(patches.shape());
    reference::unpatchify_backward<double>(dimg.view(), pc.p, grad_patches.view());
    auto loss_u = [&] {
      reference::unpatchify<double>(patches.view(), pc.p, img_out.view());
      return test::weighted_sum(dimg, img_out);
    };
    EXPECT_TRUE(test::check_gradients(loss_u, {{"patches", span_of(patches), span_of(grad_patches)}}));
  }
}

TEST(PatchifyGrad, CpuMatchesReferenceExactlyOnStridedViews) {
  // Pure data movement: exact, every layout of input and output, guards intact. {2,3,32,32,8} has
  // 2·16·192 = 6144 elements per tensor; {3,3,64,48,8} crosses the OpenMP threshold.
  std::uint64_t seed = 80;
  for (const PatchCase& pc : {PatchCase{1, 1, 1, 1, 1}, PatchCase{2, 3, 14, 21, 7}, PatchCase{3, 3, 64, 48, 8}}) {
    const std::int64_t n = (pc.h / pc.p) * (pc.w / pc.p), k = pc.c * pc.p * pc.p;
    for (test::Layout lin : kAllLayouts)
      for (test::Layout lout : kAllLayouts) {
        SCOPED_TRACE(::testing::Message() << "B" << pc.b << " C" << pc.c << " " << pc.h << "x" << pc.w << " p" << pc.p
                                          << " in " << test::layout_name(lin) << " out " << test::layout_name(lout));
        Guarded<float, 3> dpatches({pc.b, n, k}, lin, kSentinel);
        dpatches.fill_normal(++seed);
        Guarded<float, 4> dimg({pc.b, pc.c, pc.h, pc.w}, lout, kSentinel);
        Tensor<float, 4> dimg_ref({pc.b, pc.c, pc.h, pc.w});
        ops::patchify_backward(cpu_backend{}, dpatches.cview(), pc.p, dimg.view());
        reference::patchify_backward(dpatches.cview(), pc.p, dimg_ref.view());
        EXPECT_TRUE(test::all_close(dimg.cview(), dimg_ref.view(), test::kExact));
        EXPECT_TRUE(dimg.guards_intact());

        Guarded<float, 4> g_img({pc.b, pc.c, pc.h, pc.w}, lin, kSentinel);
        g_img.fill_normal(++seed);
        Guarded<float, 3> g_patches({pc.b, n, k}, lout, kSentinel);
        Tensor<float, 3> g_patches_ref({pc.b, n, k});
        ops::unpatchify_backward(cpu_backend{}, g_img.cview(), pc.p, g_patches.view());
        reference::unpatchify_backward(g_img.cview(), pc.p, g_patches_ref.view());
        EXPECT_TRUE(test::all_close(g_patches.cview(), g_patches_ref.view(), test::kExact));
        EXPECT_TRUE(g_patches.guards_intact());
      }
  }
}

TEST(EmbeddingGrad, CpuMatchesReferenceOnStridedViews) {
  // M·D ≥ 16384 in the second case (OpenMP), D = 300 = four full column blocks of 64 and a partial
  // one; dtable starts non-zero (parameter gradients accumulate).
  struct Case {
    std::int64_t vocab, dim, m;
  };
  std::uint64_t seed = 90;
  for (const Case& c : {Case{7, 5, 11}, Case{100, 300, 500}}) {
    const Tensor<std::int32_t, 1> ids = make_ids(c.m, c.vocab, 37, 3);
    for (test::Layout lin : kAllLayouts)
      for (test::Layout lout : kAllLayouts) {
        SCOPED_TRACE(::testing::Message() << "V" << c.vocab << " D" << c.dim << " M" << c.m << " in "
                                          << test::layout_name(lin) << " out " << test::layout_name(lout));
        Guarded<float, 2> table({c.vocab, c.dim}, lin, kSentinel);
        table.fill_normal(++seed);
        Guarded<float, 2> out({c.m, c.dim}, lout, kSentinel);
        Tensor<float, 2> out_ref({c.m, c.dim});
        ops::embedding(cpu_backend{}, table.cview(), ids.view(), out.view());
        reference::embedding(table.cview(), ids.view(), out_ref.view());
        EXPECT_TRUE(test::all_close(out.cview(), out_ref.view(), test::kExact));  // a copy
        EXPECT_TRUE(out.guards_intact());

        Guarded<float, 2> dout({c.m, c.dim}, lin, kSentinel);
        dout.fill_normal(++seed);
        Guarded<float, 2> dtable({c.vocab, c.dim}, lout, kSentinel);
        dtable.fill_normal(++seed);  // a gradient already holding a value
        Tensor<float, 2> dtable_ref({c.vocab, c.dim});
        for (std::int64_t v = 0; v < c.vocab; ++v)
          for (std::int64_t d = 0; d < c.dim; ++d) dtable_ref(v, d) = dtable.cview()(v, d);
        ops::embedding_backward(cpu_backend{}, ids.view(), dout.cview(), dtable.view());
        reference::embedding_backward(ids.view(), dout.cview(), dtable_ref.view());
        EXPECT_TRUE(test::all_close(dtable.cview(), dtable_ref.view(), test::kF32Reduction));
        EXPECT_TRUE(dtable.guards_intact());
      }
  }
}

TEST(EmbeddingGrad, AddRowsBroadcastCpuMatchesReferenceOnStridedViews) {
  struct Case {
    std::int64_t batch, n, dim;
  };
  std::uint64_t seed = 110;
  for (const Case& c : {Case{1, 1, 1}, Case{3, 7, 5}, Case{4, 65, 96}}) {
    for (test::Layout lin : kAllLayouts)
      for (test::Layout lout : kAllLayouts) {
        SCOPED_TRACE(::testing::Message() << "B" << c.batch << " N" << c.n << " D" << c.dim << " in "
                                          << test::layout_name(lin) << " out " << test::layout_name(lout));
        Guarded<float, 2> table({c.n, c.dim}, lin, kSentinel);
        table.fill_normal(++seed);
        Guarded<float, 3> x({c.batch, c.n, c.dim}, lout, kSentinel);
        x.fill_normal(++seed);
        Tensor<float, 3> x_ref({c.batch, c.n, c.dim});
        for (std::int64_t b = 0; b < c.batch; ++b)
          for (std::int64_t n = 0; n < c.n; ++n)
            for (std::int64_t d = 0; d < c.dim; ++d) x_ref(b, n, d) = x.cview()(b, n, d);
        ops::add_rows_broadcast(cpu_backend{}, x.view(), table.cview());
        reference::add_rows_broadcast(x_ref.view(), table.cview());
        EXPECT_TRUE(test::all_close(x.cview(), x_ref.view(), test::kF32Op));
        EXPECT_TRUE(x.guards_intact());

        Guarded<float, 3> dx({c.batch, c.n, c.dim}, lin, kSentinel);
        dx.fill_normal(++seed);
        Guarded<float, 2> dtable({c.n, c.dim}, lout, kSentinel);
        dtable.fill_normal(++seed);  // accumulate into a non-zero gradient
        Tensor<float, 2> dtable_ref({c.n, c.dim});
        for (std::int64_t n = 0; n < c.n; ++n)
          for (std::int64_t d = 0; d < c.dim; ++d) dtable_ref(n, d) = dtable.cview()(n, d);
        ops::add_rows_broadcast_backward(cpu_backend{}, dx.cview(), dtable.view());
        reference::add_rows_broadcast_backward(dx.cview(), dtable_ref.view());
        EXPECT_TRUE(test::all_close(dtable.cview(), dtable_ref.view(), test::kF32Reduction));
        EXPECT_TRUE(dtable.guards_intact());
      }
  }
}

TEST(EmbeddingGrad, CpuBackwardIsIndependentOfThreadCount) {
  // Column blocks own their columns and add rows in increasing m: identical bits for 1 and 2 threads.
  const std::int64_t vocab = 50, dim = 200, m = 400;
  const Tensor<std::int32_t, 1> ids = make_ids(m, vocab, 7, 1);
  Tensor<double, 2> dd({m, dim});
  fill_normal(dd, 3);
  const Tensor<float, 2> dout = test::to_float(dd);
  Tensor<float, 2> g1({vocab, dim}), g2({vocab, dim});
  const int before = num_threads();
  set_num_threads(1);
  ops::embedding_backward(cpu_backend{}, ids.view(), dout.view(), g1.view());
  set_num_threads(2);
  ops::embedding_backward(cpu_backend{}, ids.view(), dout.view(), g2.view());
  set_num_threads(before);
  EXPECT_TRUE(test::all_close(g2.view(), g1.view(), test::kExact));
}

TEST(EmbeddingGrad, BadArgumentsNameTheProblem) {
  using test::expect_error_naming;
  Tensor<float, 2> table({5, 3}), out({3, 3}), dout({3, 3}), dtable({5, 3});
  Tensor<std::int32_t, 1> ids({3});
  ids(0) = 1;
  ids(1) = 4;
  ids(2) = 5;  // V = 5: one past the end
  expect_error_naming([&] { ops::embedding(cpu_backend{}, table.view(), ids.view(), out.view()); },
                      "embedding: id 5 at position 2 is outside the table of V = 5 rows");
  expect_error_naming([&] { reference::embedding(table.view(), ids.view(), out.view()); }, "id 5 at position 2");
  expect_error_naming([&] { ops::embedding_backward(cpu_backend{}, ids.view(), dout.view(), dtable.view()); },
                      "embedding_backward: id 5 at position 2 is outside the table of V = 5 rows");
  ids(2) = -1;
  expect_error_naming([&] { ops::embedding(cpu_backend{}, table.view(), ids.view(), out.view()); },
                      "id -1 at position 2");
  ids(2) = 0;
  Tensor<float, 2> out_bad({3, 4}), dout_bad({2, 3});
  expect_error_naming([&] { ops::embedding(cpu_backend{}, table.view(), ids.view(), out_bad.view()); },
                      "embedding: out has shape [3, 4], expected [3, 3]");
  expect_error_naming([&] { ops::embedding_backward(cpu_backend{}, ids.view(), dout_bad.view(), dtable.view()); },
                      "embedding_backward: dout has shape [2, 3]");

  Tensor<float, 3> x({2, 4, 3});
  Tensor<float, 2> pos_bad({5, 3});
  expect_error_naming([&] { ops::add_rows_broadcast(cpu_backend{}, x.view(), pos_bad.view()); },
                      "add_rows_broadcast: table has shape [5, 3], expected [4, 3]");
  expect_error_naming([&] { ops::add_rows_broadcast_backward(cpu_backend{}, x.view(), pos_bad.view()); },
                      "add_rows_broadcast_backward: dtable has shape [5, 3]");

  Tensor<float, 4> img({1, 3, 8, 8});
  Tensor<float, 3> patches_bad({1, 4, 47});
  expect_error_naming([&] { ops::patchify_backward(cpu_backend{}, patches_bad.view(), 4, img.view()); },
                      "patchify_backward: patches have shape [1, 4, 47]");
  expect_error_naming([&] { reference::unpatchify_backward(img.view(), 4, patches_bad.view()); },
                      "unpatchify_backward: patches have shape");
}

}  // namespace
}  // namespace qlip
