# MLBridgeFortranFlags
# --------------------
# Fortran compiler flags of mlbridge's targets, by compiler ID, set on each target as PRIVATE
# options: nothing here reaches the installed package (MLBridgeTargets.cmake, mlbridge.pc).
#
#   mlb_fortran_flags(<target> [MODEL])
#
# Every target: the build type's optimisation (CMake's defaults: -O3 in Release with GNU), and in
# the test build the compiler's warnings and run-time checks (GNU: -Wall -Wextra -fcheck=all ...).
# The test build is CMAKE_BUILD_TYPE=Debug, or MLB_STRICT=ON in any build type; MLB_STRICT also
# makes warnings errors (where the compiler can).
# MODEL (the toy ocean model, never the library): loop unrolling in optimised builds, no fused
# multiply-add (its in-process closures must give the Python closures' bits), and
# -march=<MLB_MODEL_ARCH> (or the compiler's equivalent) only when that cache variable is set.
#
#   mlb_fortran_allow_unused_dummies(<source>...)
#
# For sources whose dummies are unused by design (the MPI-only backend): no warning for them.
#
# Options of two words are "SHELL:" groups: CMake would otherwise merge repeated words away.
# Compilers: GNU, Intel (ifort) and IntelLLVM (ifx), NVHPC (and PGI), Cray; any other gets the
# build type's flags and no checks.
include_guard(GLOBAL)

option(MLB_STRICT "test build: warnings as errors and run-time checks in any build type" OFF)
set(MLB_MODEL_ARCH "" CACHE STRING
  "target architecture of the toy model only (e.g. native, x86-64-v3); empty: the compiler's default")

set(_mlb_id "${CMAKE_Fortran_COMPILER_ID}")
if(_mlb_id STREQUAL "GNU")
  set(MLB_FORTRAN_CHECKS -Wall -Wextra -fcheck=all -ffpe-trap=invalid,zero,overflow -fbacktrace)
  set(MLB_FORTRAN_WERROR -Werror)
  set(MLB_FORTRAN_NO_UNUSED -Wno-unused-dummy-argument)
  set(MLB_MODEL_FAST -funroll-loops)
  set(MLB_MODEL_EXACT -ffp-contract=off)
  set(_mlb_arch_flag "-march=")
elseif(_mlb_id MATCHES "^Intel")   # Intel (ifort) and IntelLLVM (ifx)
  # arg_temp_created only prints at run time; everything else is checked
  set(MLB_FORTRAN_CHECKS "SHELL:-warn all" "SHELL:-check all,noarg_temp_created" -traceback -fpe0)
  set(MLB_FORTRAN_WERROR "SHELL:-warn errors")
  set(MLB_FORTRAN_NO_UNUSED "SHELL:-warn nounused")
  set(MLB_MODEL_FAST -unroll)
  set(MLB_MODEL_EXACT "SHELL:-fp-model precise" -no-fma)
  set(_mlb_arch_flag "-march=")
elseif(_mlb_id STREQUAL "NVHPC" OR _mlb_id STREQUAL "PGI")
  set(MLB_FORTRAN_CHECKS -Minform=warn -Mbounds -Mchkptr -traceback)
  set(MLB_FORTRAN_WERROR "")
  set(MLB_FORTRAN_NO_UNUSED "")
  set(MLB_MODEL_FAST -Munroll)
  set(MLB_MODEL_EXACT -Kieee -Mnofma)
  set(_mlb_arch_flag "-tp=")
elseif(_mlb_id STREQUAL "Cray")
  set(MLB_FORTRAN_CHECKS "SHELL:-m 3" "SHELL:-R bcps")
  set(MLB_FORTRAN_WERROR "")
  set(MLB_FORTRAN_NO_UNUSED "")
  set(MLB_MODEL_FAST "")
  set(MLB_MODEL_EXACT "SHELL:-h fp0")
  set(_mlb_arch_flag "")   # Cray: the craype-<cpu> module chooses the target
else()
  message(STATUS "mlbridge: no warning or check flags known for Fortran compiler '${_mlb_id}'")
  set(MLB_FORTRAN_CHECKS "")
  set(MLB_FORTRAN_WERROR "")
  set(MLB_FORTRAN_NO_UNUSED "")
  set(MLB_MODEL_FAST "")
  set(MLB_MODEL_EXACT "")
  set(_mlb_arch_flag "")
endif()

set(MLB_MODEL_ARCH_FLAGS "")
if(MLB_MODEL_ARCH)
  if(_mlb_arch_flag)
    set(MLB_MODEL_ARCH_FLAGS "${_mlb_arch_flag}${MLB_MODEL_ARCH}")
  else()
    message(WARNING "mlbridge: MLB_MODEL_ARCH is ignored with Fortran compiler '${_mlb_id}'")
  endif()
endif()

function(mlb_fortran_flags target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "MODEL" "" "")
  set(fortran "$<COMPILE_LANGUAGE:Fortran>")
  set(checked "$<OR:$<CONFIG:Debug>,$<BOOL:${MLB_STRICT}>>")
  target_compile_options(${target} PRIVATE
    "$<$<AND:${fortran},${checked}>:${MLB_FORTRAN_CHECKS}>"
    "$<$<AND:${fortran},$<BOOL:${MLB_STRICT}>>:${MLB_FORTRAN_WERROR}>")
  if(arg_MODEL)
    set(optimised "$<CONFIG:Release,RelWithDebInfo,MinSizeRel>")
    target_compile_options(${target} PRIVATE
      "$<${fortran}:${MLB_MODEL_EXACT}>"
      "$<$<AND:${fortran},${optimised}>:${MLB_MODEL_FAST}>"
      "$<${fortran}:${MLB_MODEL_ARCH_FLAGS}>")
  endif()
endfunction()

function(mlb_fortran_allow_unused_dummies)
  if(MLB_FORTRAN_NO_UNUSED)
    set_property(SOURCE ${ARGN} APPEND PROPERTY COMPILE_OPTIONS ${MLB_FORTRAN_NO_UNUSED})
  endif()
endfunction()
