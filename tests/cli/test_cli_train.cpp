/// @file test_cli_train.cpp
/// @brief qlip-train end to end on the real Fashion-MNIST (Debian's dataset-fashion-mnist, installed
///        by scripts/setup.sh): a short run writes the checkpoint folder in the official layout (read
///        back by `qlip info`), the log, the plot and the grid; a run killed with SIGKILL and resumed
///        logs exactly the loss curve of an uninterrupted run; bad input gives one line.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/cli_test_util.hpp"
#include "common/lpips_random.hpp"
#include "qlip/io/safetensors.hpp"
#include "qlip/model/lpips_weights.hpp"
#include "qlip/nn/lpips.hpp"

namespace qlip::test::cli {
namespace {

class TrainCliTest : public CliTest {
 protected:
  std::string train_args(const std::string& out, int steps) const {
    return "--out " + q(out) + " --steps " + std::to_string(steps) +
           " --batch 4 --warmup 2 --save-every 1 --grid-every 3 --log-every 1 --threads 1 --seed 3 --vocab " +
           q(vocab_gz());
  }
  RunResult train(const std::string& args) const { return run_program(QLIP_TRAIN_PATH, args); }
  RunResult eval(const std::string& args) const { return run_program(QLIP_EVAL_PATH, args); }
  RunResult run_program(const char* program, const std::string& args) const {
    RunResult r;
    const std::string so = path(".train_out"), se = path(".train_err");
    r.command = q(program) + " " + args;
    const int status = std::system((r.command + " >" + q(so) + " 2>" + q(se)).c_str());
    r.code = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
    r.out = read_text(so);
    r.err = read_text(se);
    return r;
  }
  /// The log without its images/s column (the only one that depends on timing).
  static std::string curve(const std::string& csv) {
    std::stringstream in(read_text(csv)), out;
    std::string line;
    while (std::getline(in, line)) {
      std::vector<std::string> cells;
      std::stringstream ss(line);
      std::string c;
      while (std::getline(ss, c, ',')) cells.push_back(c);
      for (std::size_t i = 0; i < cells.size(); ++i)
        if (i != 12) out << cells[i] << ',';
      out << '\n';
    }
    return out.str();
  }
  /// The CSV's rows after the header, each cell as a number ("nan" reads as NaN).
  static std::vector<std::vector<double>> numbers(const std::string& csv) {
    std::stringstream in(read_text(csv));
    std::string line;
    std::getline(in, line);
    std::vector<std::vector<double>> out;
    while (std::getline(in, line)) {
      std::vector<double> v;
      std::stringstream ss(line);
      std::string c;
      while (std::getline(ss, c, ',')) v.push_back(std::strtod(c.c_str(), nullptr));
      out.push_back(std::move(v));
    }
    return out;
  }
  static int rows(const std::string& csv) {
    std::stringstream in(read_text(csv));
    std::string line;
    int n = -1;  // header
    while (std::getline(in, line)) ++n;
    return n;
  }
};

TEST_F(TrainCliTest, AShortRunWritesACheckpointThatQlipReads) {
  const std::string run = out("run");
  const RunResult r = train(train_args(run, 3));
  ASSERT_EQ(r.code, 0) << r;
  for (const char* f : {"checkpoint/config.json", "checkpoint/model.safetensors", "checkpoint/preprocessor_config.json",
                        "checkpoint/training_state.safetensors", "log.csv", "loss.png", "recon.png"})
    EXPECT_TRUE(fs::exists(run + "/" + f)) << f;
  EXPECT_EQ(rows(run + "/log.csv"), 3);
  EXPECT_NE(r.err.find("step 3/3"), std::string::npos) << r.err;
  const RunResult info = this->run("info " + q(run + "/checkpoint"));
  ASSERT_EQ(info.code, 0) << info;
  EXPECT_NE(info.out.find("qlip-demo-fashion"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("RoPE yes (table from the checkpoint)"), std::string::npos) << info.out;
}

TEST_F(TrainCliTest, KilledAndResumedRunLogsTheUninterruptedLossCurve) {
  const std::string straight = out("straight"), killed = out("killed");
  ASSERT_EQ(train(train_args(straight, 8)).code, 0);
  // Start the same run, SIGKILL it once it has logged 4 steps (it saves after every step, so the kill
  // may land inside a checkpoint write: the previous checkpoint must then be the one resumed).
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string cmd = "exec " + q(QLIP_TRAIN_PATH) + " " + train_args(killed, 8) + " >/dev/null 2>&1";
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (rows(killed + "/log.csv") < 4 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run ended before it was killed";
  const RunResult resumed = train(train_args(killed, 8) + " --resume");
  ASSERT_EQ(resumed.code, 0) << resumed;
  EXPECT_NE(resumed.err.find("resumed at step"), std::string::npos) << resumed.err;
  EXPECT_EQ(curve(killed + "/log.csv"), curve(straight + "/log.csv"));
  EXPECT_EQ(read_text(killed + "/checkpoint/model.safetensors"), read_text(straight + "/checkpoint/model.safetensors"));
}

TEST_F(TrainCliTest, ResumeWithOtherSettingsIsRefusedNamingTheFlag) {
  const std::string run = out("settings");
  ASSERT_EQ(train(train_args(run, 2)).code, 0);
  const std::string before = read_text(run + "/checkpoint/model.safetensors");
  RunResult r = train(train_args(run, 4) + " --alpha-recon 5 --resume");  // --steps differs first
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_NE(r.err.find("was started with --steps 2, not 4"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = train(train_args(run, 2) + " --alpha-recon 5 --resume");
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_NE(r.err.find("was started with --alpha-recon 1000, not 5"), std::string::npos) << r.err;
  r = train(train_args(run, 2) + " --lr-scale 2 --resume");
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_NE(r.err.find("--lr-vision"), std::string::npos) << r.err;
  EXPECT_EQ(read_text(run + "/checkpoint/model.safetensors"), before);  // nothing was written
  // Settings that change no result may differ.
  r = train(train_args(run, 2) + " --max-minutes 5 --resume");
  EXPECT_EQ(r.code, 0) << r;
}

// --balance auto: α_r from the median gradient ratio of the first --balance-steps steps, reported,
// logged (grad_balance.csv/.png) and kept across a resume that interrupts the window.
TEST_F(TrainCliTest, AutoBalanceSetsAlphaReconAndAResumeDerivesTheSameValue) {
  const std::string straight = out("bal_straight"), stopped = out("bal_stopped");
  const std::string args = " --balance auto --balance-steps 3";
  const RunResult r = train(train_args(straight, 5) + args);
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_NE(r.err.find("loss balance: median |dL_align/dw| / |dL_recon/dw| at "
                       "vision_model.encoder.layers.1.mlp.w3.weight over 3 steps"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(rows(straight + "/grad_balance.csv"), 3);
  EXPECT_TRUE(fs::exists(straight + "/grad_balance.png"));
  const nlohmann::json summary = nlohmann::json::parse(read_text(straight + "/train_summary.json"));
  EXPECT_EQ(summary.at("balance"), "auto");
  const double alpha_r = summary.at("alpha_recon").get<double>();
  EXPECT_GT(alpha_r, 1.0) << "the alignment gradient dominates at E_v's last MLP (the paper's Fig. 5)";
  EXPECT_NE(alpha_r, 1000.0) << "α_r was not replaced";

  // --max-minutes 1e-9 stops (and saves) after the first step, inside the window.
  ASSERT_EQ(train(train_args(stopped, 5) + args + " --max-minutes 1e-9").code, 0);
  const RunResult resumed = train(train_args(stopped, 5) + args + " --resume");
  ASSERT_EQ(resumed.code, 0) << resumed;
  const nlohmann::json again = nlohmann::json::parse(read_text(stopped + "/train_summary.json"));
  EXPECT_EQ(again.at("alpha_recon").get<double>(), alpha_r);
  EXPECT_EQ(read_text(stopped + "/grad_balance.csv"), read_text(straight + "/grad_balance.csv"));
  EXPECT_EQ(read_text(stopped + "/checkpoint/model.safetensors"), read_text(straight + "/checkpoint/model.safetensors"));

  const RunResult bad = train(train_args(out("bal_bad"), 2) + " --balance auto --balance-steps 3");
  EXPECT_EQ(bad.code, 1) << bad;
  EXPECT_NE(bad.err.find("--balance-steps 3 is more than --steps 2"), std::string::npos) << bad.err;
  const RunResult no_align = train(train_args(out("bal_bad2"), 4) + " --balance auto --alpha-align 0");
  EXPECT_EQ(no_align.code, 1) << no_align;
  EXPECT_NE(no_align.err.find("--alpha-align is 0"), std::string::npos) << no_align.err;
}

// Stage 2: E_v, the text tower, the projections and the logit scale come out bit-identical to the
// stage-1 checkpoint; the quantizer MLPs and the decoder change; LPIPS joins when given weights.
TEST_F(TrainCliTest, StageTwoFreezesTheEncoderAndTrainsTheQuantizerAndDecoder) {
  const std::string s1 = out("stage1"), s2 = out("stage2");
  ASSERT_EQ(train(train_args(s1, 2)).code, 0);
  const RunResult r = train(train_args(s2, 2) + " --stage 2 --lr-base 1e-3 --init " + q(s1 + "/checkpoint"));
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_NE(r.err.find("stage 2 without --lpips weights: alpha_p = 0"), std::string::npos) << r.err;
  const SafetensorsFile before = SafetensorsFile::open(s1 + "/checkpoint/model.safetensors");
  const SafetensorsFile after = SafetensorsFile::open(s2 + "/checkpoint/model.safetensors");
  int frozen = 0, trained = 0, changed = 0;
  for (const auto& t : before.tensors()) {
    const auto a = before.bytes(t.name), b = after.bytes(t.name);
    const bool same = a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
    const bool fine_tuned = t.name.starts_with("vision_decoder.") || t.name.find("quant_embed") != std::string::npos;
    if (t.name.find("rope.freqs") != std::string::npos) continue;  // buffers
    if (fine_tuned) {
      ++trained;
      changed += same ? 0 : 1;
    } else {
      ++frozen;
      EXPECT_TRUE(same) << t.name << " changed in stage 2";
    }
  }
  EXPECT_GT(frozen, 20);
  EXPECT_GT(changed, trained / 2) << changed << " of " << trained << " decoder/quantizer tensors changed";
  const nlohmann::json summary = nlohmann::json::parse(read_text(s2 + "/train_summary.json"));
  EXPECT_EQ(summary.at("stage"), 2);
  EXPECT_EQ(summary.at("alpha_perceptual").get<double>(), 0.0);

  // With LPIPS weights (the tests' deterministic backbone and heads: the pipeline, not a metric).
  using Net = nn::Lpips<64, cpu_backend>;
  Net net;
  LpipsWeights<Net> w(net);
  test::fill_lpips_test_backbone(net);
  SafetensorsWriter file;
  net.visit_parameters([&](const std::string& name, auto& p) {
    if (name.starts_with("lin"))
      for (std::int64_t i = 0; i < p.numel(); ++i) p.value.data()[i] = 0.01f;
    file.add(name, p.value);
  });
  const std::string lpips = path("lpips.safetensors");
  file.write(lpips);
  const RunResult with = train(train_args(out("stage2_lpips"), 2) + " --stage 2 --lpips " + q(lpips) + " --init " +
                               q(s1 + "/checkpoint"));
  ASSERT_EQ(with.code, 0) << with;
  EXPECT_NE(with.err.find("lpips "), std::string::npos) << "the progress line shows the perceptual loss: " << with.err;

  RunResult bad = train(train_args(out("s2_noinit"), 2) + " --stage 2");
  EXPECT_EQ(bad.code, 1) << bad;
  EXPECT_NE(bad.err.find("give its checkpoint with --init"), std::string::npos) << bad.err;
  bad = train(train_args(out("s2_lrv"), 2) + " --stage 2 --lr-vision 1e-3 --init " + q(s1 + "/checkpoint"));
  EXPECT_NE(bad.err.find("E_v is frozen"), std::string::npos) << bad.err;
  bad = train(train_args(out("s1_lpips"), 2) + " --lpips " + q(lpips));
  EXPECT_NE(bad.err.find("--lpips is a stage-2 loss"), std::string::npos) << bad.err;
  bad = train(train_args(out("s2_auto"), 2) + " --stage 2 --balance auto --balance-steps 1 --init " + q(s1 + "/checkpoint"));
  EXPECT_NE(bad.err.find("stage 2 has no contrastive loss"), std::string::npos) << bad.err;
  const std::string heads = std::string(QLIP_VOCAB_DIR) + "/lpips_vgg_v0.1_heads.safetensors";
  if (fs::exists(heads)) {
    bad = train(train_args(out("s2_heads"), 2) + " --stage 2 --lpips " + q(heads) + " --init " + q(s1 + "/checkpoint"));
    EXPECT_EQ(bad.code, 1) << bad;
    EXPECT_NE(bad.err.find("no tensor 'net.slice1.0.weight'"), std::string::npos) << bad.err;
  }
}

// Stage 2's GAN loss: the discriminator trains beside the decoder (R1 on its schedule), is saved in
// the checkpoint folder with its optimiser state, and a stopped run resumes to the uninterrupted
// run's bits, the discriminator's included.
TEST_F(TrainCliTest, StageTwoWithTheGanResumesExactlyDiscriminatorIncluded) {
  const std::string s1 = out("gan_stage1"), straight = out("gan_straight"), stopped = out("gan_stopped");
  ASSERT_EQ(train(train_args(s1, 2)).code, 0);
  const std::string args = " --stage 2 --alpha-gan 0.5 --r1-every 2 --lr-disc 1e-3 --init " + q(s1 + "/checkpoint");
  const RunResult r = train(train_args(straight, 4) + args);
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_NE(r.err.find("GAN loss from step 0: alpha_g 0.5, discriminator 84673 parameters, R1 gamma 10 every 2"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("L_G "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("R1 "), std::string::npos) << r.err;
  for (const char* f : {"discriminator.safetensors", "discriminator_state.safetensors"})
    EXPECT_TRUE(fs::exists(straight + "/checkpoint/" + f)) << f;
  const SafetensorsFile d = SafetensorsFile::open(straight + "/checkpoint/discriminator.safetensors");
  EXPECT_TRUE(d.contains("b32.fromrgb.weight") && d.contains("b4.out.bias"));
  // The CSV has the GAN columns: L_G and L_D near ln 2 for a fresh discriminator, R1 on steps 1 and 3.
  const std::vector<std::vector<double>> log = numbers(straight + "/log.csv");
  ASSERT_EQ(log.size(), 4u);
  for (std::size_t i = 0; i < log.size(); ++i) {
    ASSERT_GE(log[i].size(), 21u);
    EXPECT_NEAR(log[i][15], std::log(2.0), 0.5) << "L_G, step " << i + 1;
    EXPECT_NEAR(log[i][16], std::log(2.0), 0.5) << "L_D, step " << i + 1;
    EXPECT_EQ(std::isnan(log[i][17]), i % 2 == 1) << "R1 on discriminator steps 0, 2, ...: step " << i + 1;
  }

  ASSERT_EQ(train(train_args(stopped, 4) + args + " --max-minutes 1e-9").code, 0);
  const RunResult resumed = train(train_args(stopped, 4) + args + " --resume");
  ASSERT_EQ(resumed.code, 0) << resumed;
  EXPECT_EQ(curve(stopped + "/log.csv"), curve(straight + "/log.csv"));
  for (const char* f : {"model.safetensors", "discriminator.safetensors"})
    EXPECT_EQ(read_text(stopped + "/checkpoint/" + f), read_text(straight + "/checkpoint/" + f)) << f;

  // --alpha-gan 0: no discriminator; GAN flags in stage 1 and a batch the minibatch-std groups do not
  // divide are refused in one line.
  ASSERT_EQ(train(train_args(out("gan_off"), 2) + " --stage 2 --alpha-gan 0 --init " + q(s1 + "/checkpoint")).code, 0);
  EXPECT_FALSE(fs::exists(out("gan_off") + "/checkpoint/discriminator.safetensors"));
  RunResult bad = train(train_args(out("gan_s1"), 2) + " --alpha-gan 0.1");
  EXPECT_EQ(bad.code, 1) << bad;
  EXPECT_NE(bad.err.find("--alpha-gan belongs to stage 2's GAN loss"), std::string::npos) << bad.err;
  std::string b6 = train_args(out("gan_b6"), 2) + args;
  b6.replace(b6.find("--batch 4"), 9, "--batch 6");
  bad = train(b6);
  EXPECT_EQ(bad.code, 1) << bad;
  EXPECT_NE(bad.err.find("a batch of 6 is not a multiple of the minibatch-std group size 4"), std::string::npos)
      << bad.err;
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
}

// --stages 1,2: stage 1, then stage 2 from its checkpoint (the GAN flags go to stage 2); a run
// stopped in stage 1 waits with stage 2, and --resume finishes both to the uninterrupted run's bits.
TEST_F(TrainCliTest, StagesOneTwoRunsBothAndResumesAcrossTheStages) {
  const std::string straight = out("stages_straight"), stopped = out("stages_stopped");
  const std::string args = " --stages 1,2 --stage2-steps 3 --alpha-gan 0.5 --r1-every 2";
  const RunResult r = train(train_args(straight, 2) + args);
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_NE(r.err.find("stage 2 from " + straight + "/stage1/checkpoint"), std::string::npos) << r.err;
  EXPECT_EQ(rows(straight + "/stage1/log.csv"), 2);
  EXPECT_EQ(rows(straight + "/stage2/log.csv"), 3);
  EXPECT_TRUE(fs::exists(straight + "/stage2/checkpoint/discriminator.safetensors"));
  EXPECT_FALSE(fs::exists(straight + "/stage1/checkpoint/discriminator.safetensors"));
  const nlohmann::json summary = nlohmann::json::parse(read_text(straight + "/stage2/train_summary.json"));
  EXPECT_EQ(summary.at("stage").get<int>(), 2);

  RunResult s = train(train_args(stopped, 2) + args + " --max-minutes 1e-9");
  ASSERT_EQ(s.code, 0) << s;
  EXPECT_NE(s.err.find("stage 1 stopped at step 1 of 2; stage 2 waits for it"), std::string::npos) << s.err;
  EXPECT_FALSE(fs::exists(stopped + "/stage2"));
  s = train(train_args(stopped, 2) + args + " --resume");
  ASSERT_EQ(s.code, 0) << s;
  EXPECT_EQ(read_text(stopped + "/stage2/checkpoint/model.safetensors"),
            read_text(straight + "/stage2/checkpoint/model.safetensors"));
  s = train(train_args(stopped, 2) + args + " --resume");  // both complete: nothing trains again
  ASSERT_EQ(s.code, 0) << s;
  EXPECT_NE(s.err.find("stage 1 in " + stopped + "/stage1 is complete"), std::string::npos) << s.err;

  RunResult bad = train(train_args(out("stages_bad"), 2) + " --stages 1,2 --stage 2");
  EXPECT_EQ(bad.code, 2) << bad;
  bad = train(train_args(out("stages_bad"), 2) + " --stage2-steps 3");
  EXPECT_EQ(bad.code, 2) << bad;
}

TEST_F(TrainCliTest, BadInputGivesOneLine) {
  RunResult r = train(train_args(out("a"), 2) + " --data-dir " + q(path("nowhere")));
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_NE(r.err.find("install Debian's dataset-fashion-mnist"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = train(train_args(out("b"), 2) + " --resume");
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_NE(r.err.find("qlip-train: error:"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = train(train_args(out("c"), 2) + " --init " + q(kTiny));
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_NE(r.err.find("is not a qlip-demo-fashion checkpoint"), std::string::npos) << r.err;
  r = train("--steps 0");
  EXPECT_EQ(r.code, 2) << r;
}

TEST_F(TrainCliTest, EvalScoresATrainedCheckpointAndWritesTheMetrics) {
  const std::string run = out("evalrun");
  ASSERT_EQ(train(train_args(run, 3)).code, 0);
  const std::string json = run + "/metrics.json", grid = run + "/test.png";
  const RunResult r = eval(q(run + "/checkpoint") + " --test 40 --probe-train 200 --batch 16 --threads 1 -q --json " +
                           q(json) + " --grid " + q(grid) + " --train-summary " + q(run + "/train_summary.json"));
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_NE(r.out.find("zero-shot top-1"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(grid));
  const nlohmann::json m = nlohmann::json::parse(read_text(json));
  for (const char* key : {"zero_shot_top1", "linear_probe_top1", "psnr_db", "ssim", "distinct_codes", "train_seconds"})
    ASSERT_TRUE(m.contains(key) && m[key].is_number()) << key << " in " << m.dump();
  for (const char* key : {"zero_shot_top1", "linear_probe_top1", "ssim"}) {
    EXPECT_GE(m[key].get<double>(), 0.0) << key;
    EXPECT_LE(m[key].get<double>(), 1.0) << key;
  }
  EXPECT_GT(m["psnr_db"].get<double>(), 0.0);
  EXPECT_GE(m["distinct_codes"].get<std::int64_t>(), 1);
  EXPECT_LE(m["distinct_codes"].get<std::int64_t>(), 40 * 64);
  EXPECT_EQ(m["test_images"].get<int>(), 40);
  EXPECT_EQ(m["probe_train_images"].get<int>(), 200);
  EXPECT_GT(m["train_seconds"].get<double>(), 0.0);
}

TEST_F(TrainCliTest, EvalBadInputGivesOneLine) {
  RunResult r = eval(q(path("no-such-checkpoint")));
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = eval(q(kTiny) + " --data-dir " + q(path("nowhere")) + " -q --vocab " + q(vocab_gz()));
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_NE(r.err.find("dataset-fashion-mnist"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

}  // namespace
}  // namespace qlip::test::cli
