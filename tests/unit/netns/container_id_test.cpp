#include <catch2/catch.hpp>

#include <string>

#include "actors/netns/container_id.hpp"

using namespace netlens;

namespace {

const std::string k_id = "3f4a9c1e2b7d8e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";
const std::string k_other = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

} // namespace

TEST_CASE("container id from docker cgroupfs paths", "[netns][container_id]") {
  CHECK(container_id_from_cgroup("0::/docker/" + k_id + "\n") == k_id);
  // cgroup v1: one line per hierarchy; all name the container.
  const std::string v1 = "12:pids:/docker/" + k_id + "\n" + "11:memory:/docker/" + k_id + "\n" +
                         "2:cpu,cpuacct:/docker/" + k_id + "\n" + "1:name=systemd:/docker/" + k_id +
                         "\n" + "0::/\n";
  CHECK(container_id_from_cgroup(v1) == k_id);
  // v1 where the first hierarchies are at the root and a later one names the container.
  CHECK(container_id_from_cgroup("13:rdma:/\n12:freezer:/\n11:memory:/docker/" + k_id + "\n") ==
        k_id);
}

TEST_CASE("container id from systemd-driver scopes", "[netns][container_id]") {
  CHECK(container_id_from_cgroup("0::/system.slice/docker-" + k_id + ".scope\n") == k_id);
  CHECK(container_id_from_cgroup("0::/machine.slice/libpod-" + k_id + ".scope\n") == k_id);
  // rootless podman puts the container's processes one level below its scope.
  CHECK(container_id_from_cgroup("0::/user.slice/user-1000.slice/user@1000.service/user.slice/"
                                 "libpod-" +
                                 k_id + ".scope/container\n") == k_id);
  // systemd running inside the container.
  CHECK(container_id_from_cgroup("0::/system.slice/docker-" + k_id + ".scope/init.scope\n") ==
        k_id);
  // No newline at the end.
  CHECK(container_id_from_cgroup("0::/system.slice/docker-" + k_id + ".scope") == k_id);
}

TEST_CASE("container id from kubernetes pods", "[netns][container_id]") {
  const std::string uid = "pod8c2e1f6a-3b4d-4e5f-9a8b-7c6d5e4f3a2b";
  const std::string uid_ = "pod8c2e1f6a_3b4d_4e5f_9a8b_7c6d5e4f3a2b";
  // cgroupfs driver, v1, burstable and besteffort.
  CHECK(container_id_from_cgroup("11:memory:/kubepods/burstable/" + uid + "/" + k_id + "\n") ==
        k_id);
  CHECK(container_id_from_cgroup("4:cpuset:/kubepods/besteffort/" + uid + "/" + k_id + "\n") ==
        k_id);
  // Guaranteed pods sit right under kubepods.
  CHECK(container_id_from_cgroup("0::/kubepods/" + uid + "/" + k_id + "\n") == k_id);
  // systemd driver, v2: containerd (cri) and cri-o.
  CHECK(container_id_from_cgroup("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-" +
                                 uid_ + ".slice/cri-containerd-" + k_id + ".scope\n") == k_id);
  CHECK(container_id_from_cgroup("0::/kubepods.slice/kubepods-besteffort.slice/"
                                 "kubepods-besteffort-" +
                                 uid_ + ".slice/crio-" + k_id + ".scope\n") == k_id);
  // The pod's own cgroup names no container.
  CHECK(container_id_from_cgroup("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-" +
                                 uid_ + ".slice\n")
            .empty());
  CHECK(container_id_from_cgroup("11:memory:/kubepods/burstable/" + uid + "\n").empty());
  // kind: a pod's container inside a node container; the innermost one is the process's.
  CHECK(container_id_from_cgroup("0::/system.slice/docker-" + k_other +
                                 ".scope/kubelet.slice/kubelet-kubepods.slice/"
                                 "kubelet-kubepods-besteffort.slice/cri-containerd-" +
                                 k_id + ".scope\n") == k_id);
}

TEST_CASE("no container id outside containers", "[netns][container_id]") {
  CHECK(container_id_from_cgroup("").empty());
  CHECK(container_id_from_cgroup("0::/\n").empty());
  CHECK(container_id_from_cgroup("0::/init.scope\n").empty());
  CHECK(container_id_from_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n").empty());
  CHECK(container_id_from_cgroup("0::/system.slice/containerd.service\n").empty());
  CHECK(
      container_id_from_cgroup("12:pids:/user.slice\n1:name=systemd:/init.scope\n0::/\n").empty());
  // Runtime monitors carry the container's id but run outside it.
  CHECK(container_id_from_cgroup("0::/machine.slice/libpod-conmon-" + k_id + ".scope\n").empty());
  CHECK(container_id_from_cgroup("0::/kubepods.slice/crio-conmon-" + k_id + ".scope\n").empty());
  // Almost ids: too short, too long, upper case, not hex.
  CHECK(container_id_from_cgroup("0::/docker/" + k_id.substr(1) + "\n").empty());
  CHECK(container_id_from_cgroup("0::/docker/" + k_id + "0\n").empty());
  std::string upper = k_id;
  upper[0] = 'F';
  CHECK(container_id_from_cgroup("0::/docker/" + upper + "\n").empty());
  std::string not_hex = k_id;
  not_hex[10] = 'g';
  CHECK(container_id_from_cgroup("0::/docker/" + not_hex + "\n").empty());
  // Malformed lines are skipped, not misread.
  CHECK(container_id_from_cgroup(k_id + "\n").empty());
  CHECK(container_id_from_cgroup("garbage\n0::/docker/" + k_id + "\n") == k_id);
}
