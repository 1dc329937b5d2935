!!======================================================================
!!              ***  SUBMODULE  mlbridge_backend (MPI only)  ***
!! mlbridge library : a library built without OASIS3-MCT: transport "mpi"
!!                    only; every OASIS call is refused with a message
!!======================================================================
!! Compiled when CMake does not find OASIS3-MCT (or MLB_WITH_OASIS=OFF),
!! in place of mlbridge_backend_oasis.F90: the same interface
!! (mlbridge.F90). The report says "transports mpi", so servers never
!! choose OASIS; backend_start still refuses, should one do so anyway.
!! The other routines are reached only after backend_start succeeded.
!!----------------------------------------------------------------------
!!   backend_transports  : 'mpi', for the report   (send_report)
!!   backend_start       : refuse                  (mlb_enddef)
!!   backend_put, backend_get, backend_take_lagged, backend_finish : refuse
!!----------------------------------------------------------------------
submodule (mlbridge) mlbridge_backend
   implicit none

   character(len=*), parameter :: NO_OASIS = 'the servers chose transport = "oasis", but this mlbridge '// &
      & 'library was built without OASIS3-MCT (MLB_WITH_OASIS)'

contains

   module function backend_transports() result(names)
      character(len=:), allocatable :: names
      names = 'mpi'
   end function backend_transports


   module subroutine backend_start(cpl, status)
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(out) :: status
      cpl%l_oasis = .false.
      call set_error(cpl, MLB_ERR_CALL, 'mlb_enddef: '//NO_OASIS, status)
   end subroutine backend_start


   module subroutine backend_put(cpl, jf, kt, pfield, status)
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(in) :: jf, kt
      real(real64), intent(in) :: pfield(:,:,:)
      integer, intent(out) :: status
      call set_error(cpl, MLB_ERR_CALL, 'mlb_put: '//NO_OASIS, status)
   end subroutine backend_put


   module subroutine backend_get(cpl, jf, kt, status)
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(in) :: jf, kt
      integer, intent(out) :: status
      call set_error(cpl, MLB_ERR_CALL, 'mlb_get: '//NO_OASIS, status)
   end subroutine backend_get


   module subroutine backend_take_lagged(cpl, kt, status)
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(in) :: kt
      integer, intent(out) :: status
      call set_error(cpl, MLB_ERR_CALL, 'mlb_put: '//NO_OASIS, status)
   end subroutine backend_take_lagged


   module subroutine backend_finish(cpl, status)
      type(mlb_coupling_t), intent(inout), target, asynchronous :: cpl
      integer, intent(out) :: status
      call set_error(cpl, MLB_ERR_CALL, 'mlb_finalize: '//NO_OASIS, status)
   end subroutine backend_finish

end submodule mlbridge_backend
