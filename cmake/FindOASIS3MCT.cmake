# FindOASIS3MCT
# -------------
# Finds OASIS3-MCT (the psmile library and its MCT, MPEU and SCRIP companions), as packaged by
# Debian (`liboasis3-dev`) or installed from an upstream build.
#
# libpsmile is underlinked: it needs mct, mpeu, scrip, netcdff and netcdf after it, in that order.
# The imported target carries that list, so a consumer only writes
#     find_package(OASIS3MCT)
#     target_link_libraries(model PRIVATE OASIS3MCT::OASIS3MCT)
#
# Hints: OASIS3MCT_ROOT (CMake variable or environment variable), the prefix of an installation.
#
# Result variables:
#   OASIS3MCT_FOUND          true when everything below was found
#   OASIS3MCT_LIBRARY        the psmile library (cache; `mlbridge build` reports it)
#   OASIS3MCT_LIBRARIES      the full link list, in link order
#   OASIS3MCT_INCLUDE_DIRS   the module directories of psmile (mod_oasis) and MCT
# Imported target:
#   OASIS3MCT::OASIS3MCT
include(FindPackageHandleStandardArgs)

set(_oasis3mct_hints ${OASIS3MCT_ROOT} $ENV{OASIS3MCT_ROOT})

find_path(OASIS3MCT_PSMILE_INCLUDE_DIR mod_oasis.mod
  HINTS ${_oasis3mct_hints}
  PATH_SUFFIXES include/psmile.MPI1 psmile.MPI1 build/lib/psmile.MPI1 include
  PATHS /usr/include /usr/local/include
  DOC "directory of the OASIS3-MCT Fortran module mod_oasis.mod")
find_path(OASIS3MCT_MCT_INCLUDE_DIR m_mctworld.mod
  HINTS ${_oasis3mct_hints}
  PATH_SUFFIXES include/mct mct build/lib/mct include
  PATHS /usr/include /usr/local/include
  DOC "directory of the MCT Fortran modules")

# Debian ships the shared psmile as libpsmile.MPI1.so.0d behind the libpsmile.so link.
find_library(OASIS3MCT_LIBRARY NAMES psmile psmile.MPI1
  HINTS ${_oasis3mct_hints} PATH_SUFFIXES lib lib64
  DOC "OASIS3-MCT psmile library")
foreach(_part mct mpeu scrip)
  string(TOUPPER ${_part} _upper)
  find_library(OASIS3MCT_${_upper}_LIBRARY NAMES ${_part}
    HINTS ${_oasis3mct_hints} PATH_SUFFIXES lib lib64
    DOC "OASIS3-MCT companion library ${_part}")
  mark_as_advanced(OASIS3MCT_${_upper}_LIBRARY)
endforeach()
find_library(OASIS3MCT_NETCDFF_LIBRARY NAMES netcdff DOC "netCDF-Fortran (needed by psmile)")
find_library(OASIS3MCT_NETCDF_LIBRARY NAMES netcdf DOC "netCDF-C (needed by psmile)")
mark_as_advanced(OASIS3MCT_PSMILE_INCLUDE_DIR OASIS3MCT_MCT_INCLUDE_DIR
  OASIS3MCT_NETCDFF_LIBRARY OASIS3MCT_NETCDF_LIBRARY)

find_package_handle_standard_args(OASIS3MCT
  REQUIRED_VARS OASIS3MCT_LIBRARY OASIS3MCT_MCT_LIBRARY OASIS3MCT_MPEU_LIBRARY
    OASIS3MCT_SCRIP_LIBRARY OASIS3MCT_NETCDFF_LIBRARY OASIS3MCT_NETCDF_LIBRARY
    OASIS3MCT_PSMILE_INCLUDE_DIR OASIS3MCT_MCT_INCLUDE_DIR)

if(OASIS3MCT_FOUND)
  set(OASIS3MCT_LIBRARIES
    ${OASIS3MCT_LIBRARY} ${OASIS3MCT_MCT_LIBRARY} ${OASIS3MCT_MPEU_LIBRARY}
    ${OASIS3MCT_SCRIP_LIBRARY} ${OASIS3MCT_NETCDFF_LIBRARY} ${OASIS3MCT_NETCDF_LIBRARY})
  set(OASIS3MCT_INCLUDE_DIRS ${OASIS3MCT_PSMILE_INCLUDE_DIR} ${OASIS3MCT_MCT_INCLUDE_DIR})
  if(NOT TARGET OASIS3MCT::OASIS3MCT)
    # an INTERFACE target keeps the exact order of the list on every link line
    add_library(OASIS3MCT::OASIS3MCT INTERFACE IMPORTED)
    set_target_properties(OASIS3MCT::OASIS3MCT PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${OASIS3MCT_INCLUDE_DIRS}"
      INTERFACE_LINK_LIBRARIES "${OASIS3MCT_LIBRARIES}")
  endif()
endif()
