// The struct offsets the prebuilt tracer needs, as the kernel's own BTF states them. Used as
// the reference the offset guesser is checked against, and by tests and benchmarks that load
// the prebuilt tracer on a kernel that has BTF.
#pragma once

#include <string>
#include <variant>

#include "bpf/netlens_offsets.h"

namespace netlens {

// Byte offset of a member path ("__sk_common.skc_net", "ns.inum") in struct `type_name` of
// the BTF at btf_path, descending through anonymous unions and structs; an error names the
// part of the path that was not found.
std::variant<unsigned, std::string>
btf_member_offset(const std::string& type_name, const std::string& path,
                  const std::string& btf_path = "/sys/kernel/btf/vmlinux");

// Every field of nl_offsets from the kernel's BTF.
std::variant<nl_offsets, std::string>
offsets_from_btf(const std::string& btf_path = "/sys/kernel/btf/vmlinux");

} // namespace netlens
