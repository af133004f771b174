#include "bpf/runtime_compiler.hpp"

#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <memory>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/btf.h>

#include "flow/errno_text.hpp"
#include "flow/fnv1a.hpp"
#include "flow/kernel_release.hpp"

namespace netlens {
namespace {

#if defined(__x86_64__)
constexpr const char* k_target_arch = "x86";
#elif defined(__aarch64__)
constexpr const char* k_target_arch = "arm64";
#else
#error "add this architecture's __TARGET_ARCH_ name"
#endif

// Everything that changes the object goes into its cache key.
const char* const k_compile_flags[] = {
    "-g", "-O2", "-target", "bpf", "-D__BPF__", "-DNL_MODE_RUNTIME", "-Wno-unused-function"};

std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

uint64_t sources_hash(bool kernel_headers) {
  uint64_t h = k_fnv1a_basis;
  h = fnv1a(kernel_headers ? "headers" : "btf", kernel_headers ? 8 : 4, h);
  for (const auto& s : runtime_tracer_sources()) {
    h = fnv1a(s.name, std::strlen(s.name) + 1, h);
    h = fnv1a(s.text, std::strlen(s.text) + 1, h);
  }
  for (const char* f : k_compile_flags)
    h = fnv1a(f, std::strlen(f) + 1, h);
  return fnv1a(k_target_arch, std::strlen(k_target_arch), h);
}

// A release string goes into a file name: keep it to characters that cannot escape the dir.
std::string file_safe(std::string s) {
  for (char& c : s)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_'))
      c = '_';
  return s;
}

bool read_file(const std::string& path, std::vector<uint8_t>& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return false;
  out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return !in.bad();
}

bool write_file_atomically(const std::string& path, const void* data, size_t n) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return false;
  const auto* p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(fd, p + done, n - done);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      close(fd);
      unlink(tmp.c_str());
      return false;
    }
    done += static_cast<size_t>(w);
  }
  bool ok = fsync(fd) == 0;
  ok = close(fd) == 0 && ok;
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    unlink(tmp.c_str());
    return false;
  }
  return true;
}

// What the checksum file holds: the object's size and hash, so a truncated or altered object
// is told apart from a good one.
std::string checksum_of(const std::vector<uint8_t>& object) {
  return std::to_string(object.size()) + " " + hex(fnv1a(object.data(), object.size())) + "\n";
}

bool is_elf(const std::vector<uint8_t>& object) {
  return object.size() > 4 && std::memcmp(object.data(),
                                          "\x7f"
                                          "ELF",
                                          4) == 0;
}

bool mkdirs(const std::string& dir) {
  std::string path;
  std::stringstream parts(dir);
  std::string part;
  while (std::getline(parts, part, '/')) {
    if (part.empty())
      continue;
    path += "/" + part;
    if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
      return false;
  }
  struct stat st {};
  return stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// A scratch directory removed with everything in it, on every path.
class scratch_dir {
public:
  explicit scratch_dir(const std::string& parent) {
    std::string tmpl = parent + "/build.XXXXXX";
    if (mkdtemp(tmpl.data()))
      path_ = tmpl;
  }
  ~scratch_dir() {
    if (path_.empty())
      return;
    for (const auto& name : files_)
      unlink((path_ + "/" + name).c_str());
    rmdir((path_ + "/bpf").c_str());
    rmdir(path_.c_str());
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  const std::string& path() const { return path_; }
  void track(std::string relative) { files_.push_back(std::move(relative)); }

private:
  std::string path_;
  std::vector<std::string> files_;
};

// The first of tool, tool-20 .. tool-11 in PATH.
std::string find_tool(const std::string& tool, const std::string& configured) {
  if (!configured.empty())
    return access(configured.c_str(), X_OK) == 0 ? configured : "";
  const char* path_env = std::getenv("PATH");
  std::string path = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
  std::vector<std::string> names = {tool};
  for (int v = 20; v >= 11; --v)
    names.push_back(tool + "-" + std::to_string(v));
  for (const auto& name : names) {
    std::stringstream dirs(path);
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
      std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
      if (access(candidate.c_str(), X_OK) == 0)
        return candidate;
    }
  }
  return "";
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// A kernel header tree as distributions ship it: `build` holds the generated headers and the
// configuration; `source` the rest (the same directory for a full tree; Debian splits them and
// names the common part in build/Makefile or /lib/modules/<release>/source).
struct header_tree {
  std::string build;
  std::string source;
};

std::variant<header_tree, std::string> find_kernel_headers(const std::string& configured,
                                                           const std::string& release) {
  header_tree t;
  t.build = configured.empty() ? "/lib/modules/" + release + "/build" : configured;
  if (!is_dir(t.build + "/include"))
    return "no kernel headers for release " + release + " at " + t.build;
  t.source = t.build;
  if (configured.empty() && is_dir("/lib/modules/" + release + "/source/include"))
    t.source = "/lib/modules/" + release + "/source";
  std::ifstream makefile(t.build + "/Makefile");
  std::string first;
  if (std::getline(makefile, first) && first.rfind("include ", 0) == 0) {
    std::string included = first.substr(8);
    auto slash = included.rfind('/');
    if (slash != std::string::npos && is_dir(included.substr(0, slash) + "/include"))
      t.source = included.substr(0, slash);
  }
  if (access((t.source + "/include/linux/kconfig.h").c_str(), R_OK) != 0)
    return "the kernel headers at " + t.build + " are incomplete (no include/linux/kconfig.h)";
  if (!is_dir(t.build + "/include/generated"))
    return "the kernel headers at " + t.build + " have no generated headers (include/generated)";
  return t;
}

// Stands in for vmlinux.h when the types come from the kernel's headers.
constexpr const char* k_headers_vmlinux_h =
    R"(/* netlens: the kernel's own headers in place of vmlinux.h */
#ifndef __VMLINUX_H__
#define __VMLINUX_H__
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <linux/in.h>
#include <net/sock.h>
#include <net/inet_sock.h>
#include <net/tcp_states.h>
#include <linux/tcp.h>
#include <net/net_namespace.h>
#endif
)";

// Kernel headers hold x86 (or arm64) inline assembly the BPF target rejects; they are compiled
// for the host to LLVM bitcode, which llc then turns into BPF, as the kernel's samples/bpf did.
// The struct layouts are the host ABI's: the kernel's own.
std::vector<std::string> header_flags(const header_tree& t, const std::string& resource_dir) {
  const std::string arch = k_target_arch;
  std::vector<std::string> f = {"-nostdinc", "-isystem", resource_dir + "/include"};
  for (const std::string& d :
       {t.build + "/arch/" + arch + "/include", t.build + "/arch/" + arch + "/include/generated",
        t.source + "/arch/" + arch + "/include", t.build + "/arch/" + arch + "/include/uapi",
        t.build + "/arch/" + arch + "/include/generated/uapi",
        t.source + "/arch/" + arch + "/include/uapi", t.build + "/include", t.source + "/include",
        t.build + "/include/uapi", t.build + "/include/generated/uapi", t.source + "/include/uapi"})
    f.push_back("-I" + d);
  for (const char* x :
       {"-D__KERNEL__", "-D__BPF_TRACING__", "-DKBUILD_MODNAME=\"netlens\"", "-fno-stack-protector",
        "-fno-asynchronous-unwind-tables", "-Wno-unknown-warning-option",
        "-Wno-address-of-packed-member", "-Wno-gnu-variable-sized-type-not-at-end",
        "-Wno-pointer-sign", "-Wno-compare-distinct-pointer-types", "-Wno-unused-value"})
    f.push_back(x);
  f.push_back("-include");
  f.push_back(t.source + "/include/linux/kconfig.h");
  return f;
}

// What `clang -print-resource-dir` says: its own stddef.h and friends, since -nostdinc drops
// the system's.
std::string clang_resource_dir(const std::string& clang, const std::string& scratch) {
  std::string out = scratch + "/resource-dir";
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0)
      dup2(fd, STDOUT_FILENO);
    execl(clang.c_str(), clang.c_str(), "-print-resource-dir", static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return "";
  std::ifstream in(out);
  std::string dir;
  std::getline(in, dir);
  unlink(out.c_str());
  return dir;
}

void print_to_file(void* ctx, const char* fmt, va_list args) {
  std::vfprintf(static_cast<FILE*>(ctx), fmt, args);
}

// vmlinux.h for this kernel, written the way bpftool writes it.
std::string write_vmlinux_h(const std::string& btf_path, const std::string& out_path) {
  btf* b = btf__parse(btf_path.c_str(), nullptr);
  if (!b)
    return btf_path + ": cannot read the kernel's BTF (" + errno_text(errno) + ")";
  std::unique_ptr<btf, void (*)(btf*)> owned(b, btf__free);
  std::unique_ptr<FILE, int (*)(FILE*)> out(std::fopen(out_path.c_str(), "we"), std::fclose);
  if (!out)
    return out_path + ": " + errno_text(errno);
  std::fputs("#ifndef __VMLINUX_H__\n#define __VMLINUX_H__\n\n"
             "#ifndef BPF_NO_PRESERVE_ACCESS_INDEX\n"
             "#pragma clang attribute push (__attribute__((preserve_access_index)), "
             "apply_to = record)\n#endif\n\n",
             out.get());
  btf_dump* d = btf_dump__new(b, print_to_file, out.get(), nullptr);
  if (!d)
    return "cannot dump the kernel's BTF as C: " + errno_text(errno);
  int err = 0;
  for (uint32_t id = 1; id < btf__type_cnt(b) && err == 0; ++id)
    err = btf_dump__dump_type(d, id);
  btf_dump__free(d);
  if (err)
    return "cannot dump the kernel's BTF as C: " + errno_text(-err);
  std::fputs("\n#ifndef BPF_NO_PRESERVE_ACCESS_INDEX\n#pragma clang attribute pop\n#endif\n\n"
             "#endif /* __VMLINUX_H__ */\n",
             out.get());
  if (std::ferror(out.get()))
    return out_path + ": write failed";
  return "";
}

std::string last_lines(const std::string& path, size_t max_lines) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  std::string out;
  size_t from = lines.size() > max_lines ? lines.size() - max_lines : 0;
  for (size_t i = from; i < lines.size(); ++i)
    out += "\n  " + lines[i];
  return out;
}

// Runs clang with stderr into log_path; "" on success.
std::string run_compiler(const std::vector<std::string>& argv, const std::string& log_path) {
  std::vector<char*> args;
  for (const auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0)
    return "cannot start " + argv[0] + ": " + errno_text(errno);
  if (pid == 0) {
    int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (log >= 0) {
      dup2(log, STDERR_FILENO);
      dup2(log, STDOUT_FILENO);
    }
    execv(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR)
      return "waiting for " + argv[0] + ": " + errno_text(errno);
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return "";
  std::string why = WIFEXITED(status) ? "exited with " + std::to_string(WEXITSTATUS(status))
                                      : "was killed by signal " + std::to_string(WTERMSIG(status));
  return argv[0] + " " + why + ":" + last_lines(log_path, 12);
}

} // namespace

std::string runtime_cache_name(const std::string& release, bool kernel_headers) {
  return "tracer-" + file_safe(release) + "-" + hex(sources_hash(kernel_headers)) + ".bpf.o";
}

std::variant<runtime_build, std::string> build_runtime_tracer(const runtime_build_options& opts) {
  const std::string release = opts.kernel_release.empty() ? kernel_release() : opts.kernel_release;
  if (!mkdirs(opts.cache_dir))
    return "cannot create the cache directory " + opts.cache_dir + ": " + errno_text(errno);
  struct stat st {};
  const bool have_btf = stat(opts.btf_path.c_str(), &st) == 0;
  const bool use_headers = opts.prefer_kernel_headers || !have_btf;
  runtime_build result;
  result.path = opts.cache_dir + "/" + runtime_cache_name(release, use_headers);
  const std::string sum_path = result.path + ".sum";
  result.types_from = use_headers ? "kernel headers" : "BTF " + opts.btf_path;

  if (opts.use_cache) {
    std::vector<uint8_t> cached, sum;
    bool have_object = read_file(result.path, cached);
    if (have_object) {
      bool intact = read_file(sum_path, sum) &&
                    std::string(sum.begin(), sum.end()) == checksum_of(cached) && is_elf(cached);
      if (intact) {
        result.object = std::move(cached);
        result.from_cache = true;
        return result;
      }
      result.rebuilt_corrupt = true;
    }
  }

  std::string clang = find_tool("clang", opts.clang);
  if (clang.empty())
    return "no clang found in PATH (install clang to compile the tracer on this host)";
  header_tree headers;
  std::string llc;
  if (use_headers) {
    auto found = find_kernel_headers(opts.kernel_headers_dir, release);
    if (auto* why = std::get_if<std::string>(&found))
      return (have_btf ? "" : "no kernel BTF at " + opts.btf_path + ", and ") + *why;
    headers = std::get<header_tree>(found);
    llc = find_tool("llc", "");
    if (llc.empty())
      return "no llc found in PATH (install llvm to compile the tracer against kernel headers)";
    result.types_from = "kernel headers " + headers.build;
  } else {
    result.types_from = "BTF " + opts.btf_path;
  }

  scratch_dir dir(opts.cache_dir);
  if (dir.path().empty())
    return "cannot create a build directory in " + opts.cache_dir + ": " + errno_text(errno);
  if (mkdir((dir.path() + "/bpf").c_str(), 0700) != 0)
    return "cannot create " + dir.path() + "/bpf: " + errno_text(errno);
  for (const auto& s : runtime_tracer_sources()) {
    // libbpf's headers are included as <bpf/...>, the tracer's own as "...".
    bool libbpf = std::strncmp(s.name, "bpf_", 4) == 0;
    std::string rel = (libbpf ? "bpf/" : "") + std::string(s.name);
    dir.track(rel);
    if (!write_file_atomically(dir.path() + "/" + rel, s.text, std::strlen(s.text)))
      return "cannot write " + dir.path() + "/" + rel + ": " + errno_text(errno);
  }
  for (const char* f : {"vmlinux.h", "tracer.bpf.o", "tracer.bc", "clang.log", "llc.log"})
    dir.track(f);
  auto start = std::chrono::steady_clock::now();
  if (!use_headers) {
    if (std::string err = write_vmlinux_h(opts.btf_path, dir.path() + "/vmlinux.h"); !err.empty())
      return err;
    std::vector<std::string> argv = {clang};
    for (const char* f : k_compile_flags)
      argv.push_back(f);
    argv.push_back(std::string("-D__TARGET_ARCH_") + k_target_arch);
    argv.push_back("-I" + dir.path());
    argv.push_back("-c");
    argv.push_back(dir.path() + "/tracer.bpf.c");
    argv.push_back("-o");
    argv.push_back(dir.path() + "/tracer.bpf.o");
    if (std::string err = run_compiler(argv, dir.path() + "/clang.log"); !err.empty())
      return "compiling the tracer failed: " + err;
  } else {
    if (!write_file_atomically(dir.path() + "/vmlinux.h", k_headers_vmlinux_h,
                               std::strlen(k_headers_vmlinux_h)))
      return "cannot write " + dir.path() + "/vmlinux.h: " + errno_text(errno);
    std::string resource_dir = clang_resource_dir(clang, dir.path());
    if (resource_dir.empty())
      return clang + " -print-resource-dir failed";
    // The same flags as the BTF build, except the target: bitcode for the host first.
    std::vector<std::string> argv = {clang};
    for (const char* f : k_compile_flags)
      if (std::strcmp(f, "-target") != 0 && std::strcmp(f, "bpf") != 0)
        argv.push_back(f);
    argv.push_back("-emit-llvm");
    argv.push_back(std::string("-D__TARGET_ARCH_") + k_target_arch);
    argv.push_back("-I" + dir.path());
    for (auto& f : header_flags(headers, resource_dir))
      argv.push_back(f);
    argv.push_back("-c");
    argv.push_back(dir.path() + "/tracer.bpf.c");
    argv.push_back("-o");
    argv.push_back(dir.path() + "/tracer.bc");
    if (std::string err = run_compiler(argv, dir.path() + "/clang.log"); !err.empty())
      return "compiling the tracer against " + result.types_from + " failed: " + err;
    std::vector<std::string> llc_argv = {llc,
                                         "-march=bpf",
                                         "-mcpu=v2",
                                         "-filetype=obj",
                                         dir.path() + "/tracer.bc",
                                         "-o",
                                         dir.path() + "/tracer.bpf.o"};
    if (std::string err = run_compiler(llc_argv, dir.path() + "/llc.log"); !err.empty())
      return "generating BPF from the tracer's bitcode failed: " + err;
  }
  result.compile_us = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                                std::chrono::steady_clock::now() - start)
                                                .count());
  if (!read_file(dir.path() + "/tracer.bpf.o", result.object) || !is_elf(result.object))
    return "the compiler left no object in " + dir.path();

  // The cache is a convenience: failing to store it costs the next start a compile, no more.
  std::string sum = checksum_of(result.object);
  if (write_file_atomically(result.path, result.object.data(), result.object.size()))
    write_file_atomically(sum_path, sum.data(), sum.size());
  return result;
}

} // namespace netlens
