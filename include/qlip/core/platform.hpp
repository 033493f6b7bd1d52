/// @file platform.hpp
/// @brief QLIP_HOST_DEVICE and friends: lets small math compile for both g++ and nvcc.
#pragma once

#if defined(__CUDACC__)
#define QLIP_HOST_DEVICE __host__ __device__
#define QLIP_DEVICE __device__
/// Every __global__ kernel has internal linkage: the kernels are defined in headers, so a program
/// with several .cu files would otherwise define each non-template kernel (and its host stub) once
/// per file, and two DSOs built with qlip could clash. (nvcc ignores `inline` on __global__, and
/// rejects a visibility attribute on an internal-linkage function, which needs none.)
#define QLIP_KERNEL static __global__
#else
#define QLIP_HOST_DEVICE
#define QLIP_DEVICE
#endif
