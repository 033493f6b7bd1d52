# Third-party dependencies of qlip::qlip, all from Debian packages (scripts/setup.sh installs them).
# Used both by the source tree and by the installed qlipConfig.cmake.
include(CMakeFindDependencyMacro)
find_package(Eigen3 3.4 REQUIRED NO_MODULE)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(ZLIB REQUIRED)
# std::thread (the data loader's workers, data/loader.hpp).
find_package(Threads REQUIRED)
# Image decoding: the libraries PIL uses (libpng-dev, libjpeg62-turbo-dev, libwebp-dev).
find_package(PNG REQUIRED)
find_package(JPEG REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(QLIP_UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
pkg_check_modules(QLIP_WEBP REQUIRED IMPORTED_TARGET libwebp)

function(qlip_link_dependencies target)
  target_link_libraries(${target} INTERFACE Eigen3::Eigen OpenMP::OpenMP_CXX nlohmann_json::nlohmann_json
                        ZLIB::ZLIB PkgConfig::QLIP_UTF8PROC PNG::PNG JPEG::JPEG PkgConfig::QLIP_WEBP Threads::Threads)
endfunction()
