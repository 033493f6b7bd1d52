/// @file platform.hpp
/// @brief QLIP_HOST_DEVICE and friends: lets small math compile for both g++ and nvcc.
#pragma once

#if defined(__CUDACC__)
#define QLIP_HOST_DEVICE __host__ __device__
#define QLIP_DEVICE __device__
/// Every __global__ kernel carries hidden visibility so two DSOs built with qlip do not clash.
#define QLIP_KERNEL __global__ __attribute__((visibility("hidden")))
#else
#define QLIP_HOST_DEVICE
#define QLIP_DEVICE
#endif
