// kugetsu/version.hpp: the version of this copy of kugetsu. CMakeLists.txt reads it from
// here (project(VERSION)), so this is its one source.
#pragma once

#define KUGETSU_VERSION_MAJOR 0
#define KUGETSU_VERSION_MINOR 2
#define KUGETSU_VERSION_PATCH 0
#define KUGETSU_VERSION_STRING "0.2.0"

namespace kugetsu {
/// "MAJOR.MINOR.PATCH".
inline constexpr const char* version = KUGETSU_VERSION_STRING;
} // namespace kugetsu
