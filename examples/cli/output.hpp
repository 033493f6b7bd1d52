/// @file output.hpp
/// @brief Output guards of the `qlip` CLI: fail before any work when an output cannot be written,
///        and write multi-file outputs all-or-nothing.
///
/// Single files (codes, embeddings, grid PNG) are written atomically by the io layer (temp file +
/// rename), so a failure never leaves a half-written file; `-o -` sends them to standard output
/// once they are complete. What this header adds:
///  - check_output_file / check_output_folder: the cheap checks (folder exists, is a folder, is
///    writable; the target is not a folder) done *before* loading the model and running it, so a
///    typo in -o costs milliseconds, not a forward pass;
///  - OutputFolderTransaction: for `decode`, which writes one PNG per image. Everything is computed
///    first; the files are then written, and if any write fails the ones already written (and any
///    folder the transaction created) are removed again.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "qlip/io/image.hpp"
#include "util.hpp"

namespace qlip::cli {

namespace detail {

/// The folder a file path lives in ("." for a bare name).
inline std::string parent_folder(const std::string& path) {
  std::filesystem::path p(path);
  std::string parent = p.parent_path().string();
  return parent.empty() ? std::string(".") : parent;
}

/// Throws unless `folder` exists, is a folder and is writable.
inline void require_writable_folder(const std::string& folder, const std::string& output) {
  struct stat st {};
  if (::stat(folder.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) throw qlip::Error("cannot write '" + output + "': folder '" + folder + "' does not exist");
    if (err == ENOTDIR) throw qlip::Error("cannot write '" + output + "': '" + folder + "' is not a folder");
    throw qlip::Error("cannot write '" + output + "': " + folder + ": " + std::strerror(err));
  }
  if (!S_ISDIR(st.st_mode)) throw qlip::Error("cannot write '" + output + "': '" + folder + "' is not a folder");
  if (::access(folder.c_str(), W_OK | X_OK) != 0) {
    throw qlip::Error("cannot write '" + output + "': folder '" + folder + "' is not writable");
  }
}

}  // namespace detail

/// `-o -`: the output goes to standard output instead of a file.
inline bool is_stdout(const std::string& path) {
  return path == "-";
}

/// How messages name an output ("standard output" for `-o -`).
inline std::string output_name(const std::string& path) {
  return is_stdout(path) ? std::string("standard output") : path;
}

/// Where the informational lines of a command go: stdout normally, stderr when stdout carries the
/// output file itself (`-o -`), so the two never mix.
inline std::FILE* info_stream(const std::string& output) {
  return is_stdout(output) ? stderr : stdout;
}

/// Checks that a single output file can be created at `path` (the write itself stays atomic). For
/// `-o -`, checks instead that standard output is not a terminal: binary data would only garble it.
inline void check_output_file(const std::string& path) {
  if (path.empty()) throw UsageError("empty output path");
  if (is_stdout(path)) {
    if (::isatty(STDOUT_FILENO)) {
      throw qlip::Error("-o -: standard output is a terminal; redirect it (> file, | program) or give -o FILE");
    }
    return;
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    throw qlip::Error("cannot write '" + path + "': it is a folder (give a file name)");
  }
  detail::require_writable_folder(detail::parent_folder(path), path);
}

/// Checks that `folder` is a writable folder or can be created (its nearest existing ancestor is a
/// writable folder).
inline void check_output_folder(const std::string& folder) {
  if (folder.empty()) throw UsageError("empty output folder");
  std::filesystem::path p = std::filesystem::path(folder).lexically_normal();
  struct stat st {};
  if (::stat(p.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) throw qlip::Error("cannot write into '" + folder + "': it is not a folder");
    if (::access(p.c_str(), W_OK | X_OK) != 0) {
      throw qlip::Error("cannot write into '" + folder + "': folder is not writable");
    }
    return;
  }
  // Walk up to the nearest existing ancestor; it must be a writable folder.
  std::filesystem::path ancestor = p;
  while (true) {
    std::filesystem::path up = ancestor.parent_path();
    if (up.empty() || up == ancestor) {
      ancestor = ".";
      break;
    }
    ancestor = up;
    if (::stat(ancestor.c_str(), &st) == 0) break;
    if (errno == ENOTDIR) throw qlip::Error("cannot write into '" + folder + "': a parent of it is not a folder");
  }
  if (::stat(ancestor.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw qlip::Error("cannot write into '" + folder + "': '" + ancestor.string() + "' is not a folder");
  }
  if (::access(ancestor.c_str(), W_OK | X_OK) != 0) {
    throw qlip::Error("cannot create '" + folder + "': folder '" + ancestor.string() + "' is not writable");
  }
}

/// Writes one output file through `writer(path)`, which must write `path` atomically (the io layer's
/// writers all do). For `-o -` the writer writes into a private temporary folder and the finished
/// file is then copied to standard output, so a failure part-way prints nothing; `temp_name` is the
/// file's name there (its extension may choose the format).
/// @tparam Writer callable as writer(const std::string& path)
template <class Writer>
void write_output(const std::string& path, const std::string& temp_name, Writer&& writer) {
  if (!is_stdout(path)) {
    writer(path);
    return;
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path base = fs::temp_directory_path(ec);
  std::string tmpl = ((ec ? fs::path("/tmp") : base) / "qlip_stdout_XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    throw qlip::Error("-o -: cannot create a temporary folder '" + tmpl + "': " + std::strerror(errno));
  }
  struct RemoveFolder {
    std::string dir;
    ~RemoveFolder() {
      std::error_code ignored;
      fs::remove_all(dir, ignored);
    }
  } cleanup{tmpl};
  const std::string file = (fs::path(tmpl) / temp_name).string();
  writer(file);
  std::FILE* in = std::fopen(file.c_str(), "rb");
  if (in == nullptr) throw qlip::Error("-o -: cannot reopen '" + file + "': " + std::strerror(errno));
  std::vector<char> buf(1 << 16);
  bool ok = true;
  std::size_t n = 0;
  std::fflush(stdout);
  while (ok && (n = std::fread(buf.data(), 1, buf.size(), in)) > 0) ok = std::fwrite(buf.data(), 1, n, stdout) == n;
  const bool read_failed = std::ferror(in) != 0;
  std::fclose(in);
  ok = ok && std::fflush(stdout) == 0;
  if (read_failed) throw qlip::Error("-o -: reading '" + file + "' failed");
  if (!ok) throw qlip::Error(std::string("-o -: writing to standard output failed: ") + std::strerror(errno));
}

/// The image formats `-o` can write, by extension (lower case). The grid is PNG for now; when the
/// extension-picking writer qlip::write_image lands, add its extensions here and call it in
/// write_image_output below.
inline const std::vector<std::string>& image_output_extensions() {
  static const std::vector<std::string> extensions{".png"};
  return extensions;
}

/// Refuses an image output name whose extension the writer would not honour (PNG bytes in a .jpg
/// are a file every viewer misreads). `-o -` writes PNG.
inline void check_image_output_name(const std::string& path) {
  if (is_stdout(path)) return;
  std::string ext = std::filesystem::path(path).extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const auto& ok = image_output_extensions();
  if (std::find(ok.begin(), ok.end(), ext) != ok.end()) return;
  std::string list;
  for (const auto& e : ok) list += (list.empty() ? "" : ", ") + e;
  throw UsageError("-o " + path + ": " +
                   (ext.empty() ? std::string("no file extension") : "'" + ext + "' is not supported") +
                   "; images are written as " + list + " (or give -o - for PNG on standard output)");
}

/// Writes an image to `path` (atomically), in the format its extension names.
inline void write_image_output(const std::string& path, const Image& image) {
  write_png(path, image);
}

/// Writes several files into one folder, all or nothing. Usage:
///   OutputFolderTransaction out(dir);              // creates dir (and missing parents)
///   for (...) out.write(name, [&](const std::string& path) { write_png(path, img); });
///   out.commit();                                  // without this, the destructor rolls back
/// Rollback removes the files this transaction wrote and the folders it created (if empty).
/// A file that existed before and was overwritten cannot be restored; its replacement is removed,
/// so a failed run never leaves a mix of new and old outputs that looks complete.
class OutputFolderTransaction {
 public:
  explicit OutputFolderTransaction(const std::string& folder) : folder_(folder) {
    check_output_folder(folder);
    // Record which folders we create, outermost first, so rollback can remove them innermost first.
    std::vector<std::filesystem::path> missing;
    std::filesystem::path p = std::filesystem::path(folder).lexically_normal();
    while (!p.empty() && !std::filesystem::exists(p)) {
      missing.push_back(p);
      std::filesystem::path up = p.parent_path();
      if (up == p) break;
      p = up;
    }
    for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
      std::error_code ec;
      if (!std::filesystem::create_directory(*it, ec) && ec) {
        rollback();
        throw qlip::Error("cannot create folder '" + it->string() + "': " + ec.message());
      }
      created_folders_.push_back(*it);
    }
  }
  ~OutputFolderTransaction() {
    if (!committed_) rollback();
  }
  OutputFolderTransaction(const OutputFolderTransaction&) = delete;
  OutputFolderTransaction& operator=(const OutputFolderTransaction&) = delete;

  /// Path of `name` inside the folder.
  std::string path_for(const std::string& name) const { return (std::filesystem::path(folder_) / name).string(); }

  /// Calls `writer(path)` for `name` and records the file for rollback.
  /// @tparam Writer callable as writer(const std::string& path); must write atomically or throw
  template <class Writer>
  void write(const std::string& name, Writer&& writer) {
    const std::string path = path_for(name);
    // The io layer writes atomically, so a writer that throws leaves nothing behind (and an older
    // file at `path` untouched): only successful writes need recording.
    writer(path);
    written_.push_back(path);
  }

  /// Keeps everything written.
  void commit() { committed_ = true; }

  const std::vector<std::string>& written() const { return written_; }

 private:
  void rollback() noexcept {
    for (const auto& f : written_) {
      std::error_code ec;
      std::filesystem::remove(f, ec);
    }
    written_.clear();
    for (auto it = created_folders_.rbegin(); it != created_folders_.rend(); ++it) {
      std::error_code ec;
      std::filesystem::remove(*it, ec);  // only removes empty folders
    }
    created_folders_.clear();
  }

  std::string folder_;
  std::vector<std::string> written_;
  std::vector<std::filesystem::path> created_folders_;
  bool committed_ = false;
};

}  // namespace qlip::cli
