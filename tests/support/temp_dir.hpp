// A directory under /tmp made for one test (a fake /proc, a fake /run/netns) and removed with
// everything in it when the test is done.
#pragma once

#include <stdlib.h>

#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

namespace netlens::testing {

class temp_dir {
public:
  // /tmp/<prefix>XXXXXX
  explicit temp_dir(const std::string& prefix) {
    std::string tmpl = "/tmp/" + prefix + "XXXXXX";
    if (!mkdtemp(tmpl.data()))
      throw std::runtime_error("mkdtemp " + tmpl + " failed");
    path_ = tmpl;
  }
  ~temp_dir() { (void)!std::system(("rm -rf " + path_).c_str()); }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::string& path() const { return path_; }

  // Writes text to rel under the directory, making the directories on the way; returns the
  // file's full path.
  std::string write(const std::string& rel, const std::string& text = "") const {
    const std::string full = path_ + "/" + rel;
    (void)!std::system(("mkdir -p $(dirname " + full + ")").c_str());
    std::ofstream(full) << text;
    return full;
  }

private:
  std::string path_;
};

} // namespace netlens::testing
