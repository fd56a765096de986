# Installs kugetsu into PREFIX for the package tests, then checks the files a consumer needs.
#
#   cmake -DMODE=install -DBINARY_DIR=<kugetsu build> -DPREFIX=<dir> [-DCONFIG=<cfg>] -P install.cmake
#       `cmake --install` of an existing build (one that has KUGETSU_INSTALL=ON).
#   cmake -DMODE=fresh -DSOURCE_DIR=<kugetsu source> -DBINARY_DIR=<scratch> -DPREFIX=<dir>
#         -DGENERATOR=<gen> [-DMAKE_PROGRAM=..] [-DCXX_COMPILER=..] [-DPREFIX_PATH=..]
#         [-DCONFIG=<cfg>] -P install.cmake
#       configure, build and install a fresh copy of the source tree (tests and examples off).
cmake_minimum_required(VERSION 3.21)

foreach(v MODE BINARY_DIR PREFIX)
    if(NOT DEFINED ${v} OR "${${v}}" STREQUAL "")
        message(FATAL_ERROR "install.cmake: ${v} is not set")
    endif()
endforeach()

function(run)
    string(JOIN " " _line ${ARGN})
    message(STATUS "running: ${_line}")
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "failed (${rc}): ${_line}")
    endif()
endfunction()

set(_config_args)
if(CONFIG)
    set(_config_args --config ${CONFIG})
endif()

file(REMOVE_RECURSE ${PREFIX})

if(MODE STREQUAL "install")
    run(${CMAKE_COMMAND} --install ${BINARY_DIR} --prefix ${PREFIX} ${_config_args})
elseif(MODE STREQUAL "fresh")
    file(REMOVE_RECURSE ${BINARY_DIR})
    set(_configure ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${BINARY_DIR} -G ${GENERATOR}
        -DKUGETSU_INSTALL=ON -DKUGETSU_BUILD_TESTS=OFF -DKUGETSU_BUILD_EXAMPLES=OFF
        -DCMAKE_INSTALL_PREFIX=${PREFIX})
    if(MAKE_PROGRAM)
        list(APPEND _configure -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
    endif()
    if(CXX_COMPILER)
        list(APPEND _configure -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
    endif()
    if(PREFIX_PATH)
        # Through the environment: a ;-list does not survive being one argument here.
        string(REPLACE ";" ":" _env_path "${PREFIX_PATH}")
        set(ENV{CMAKE_PREFIX_PATH} "${_env_path}")
    endif()
    run(${_configure})
    run(${CMAKE_COMMAND} --build ${BINARY_DIR} ${_config_args})
    run(${CMAKE_COMMAND} --install ${BINARY_DIR} --prefix ${PREFIX} ${_config_args})
else()
    message(FATAL_ERROR "install.cmake: unknown MODE '${MODE}' (install or fresh)")
endif()

# What find_package and a consumer's #include need.
file(GLOB_RECURSE _config_files "${PREFIX}/*/kugetsu-config.cmake")
file(GLOB_RECURSE _version_files "${PREFIX}/*/kugetsu-config-version.cmake")
file(GLOB_RECURSE _targets_files "${PREFIX}/*/kugetsu-targets.cmake")
foreach(v _config_files _version_files _targets_files)
    if(NOT ${v})
        message(FATAL_ERROR "install.cmake: no ${v} under ${PREFIX}")
    endif()
endforeach()
foreach(h kugetsu/concepts.hpp kugetsu/lock/flock_lock.hpp kugetsu/lock/null_lock.hpp
          kugetsu/detail/posix.hpp)
    if(NOT EXISTS "${PREFIX}/include/${h}")
        message(FATAL_ERROR "install.cmake: ${PREFIX}/include/${h} was not installed")
    endif()
endforeach()
message(STATUS "kugetsu installed into ${PREFIX}")
