// Entry points of one kernel module for the emulated device. build.rs compiles, per
// kernels/<family>/<name>.cu, a unit that includes the .cu and then lists its extern "C"
// kernels with AK_EMU_KERNEL: each gets a trampoline that unpacks cuLaunchKernel's argument
// array into the kernel's parameters, registered under the kernel's name at load time.
#pragma once
#include <type_traits>
#include <utility>
#include "emu/emu_api.h"

namespace ak_emu_register {

// Not instrumented: the argument array belongs to the launch, not to kernel memory.
template <typename... A, size_t... I>
__attribute__((no_sanitize_address)) inline void invoke(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

template <typename... A>
__attribute__((no_sanitize_address)) inline void invoke(void (*f)(A...), void** args) {
    invoke(f, args, std::index_sequence_for<A...>{});
}

}  // namespace ak_emu_register

#define AK_EMU_KERNEL(module, name)                                                                \
    __attribute__((no_sanitize_address)) static void ak_emu_trampoline_##name(void** args) {      \
        ak_emu_register::invoke(&name, args);                                                      \
    }                                                                                              \
    __attribute__((constructor)) static void ak_emu_register_##name() {                           \
        ak_emu_register_kernel(module, #name, &ak_emu_trampoline_##name);                          \
    }
