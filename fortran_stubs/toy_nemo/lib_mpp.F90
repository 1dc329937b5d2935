MODULE lib_mpp
   !!======================================================================
   !!                       ***  MODULE  lib_mpp  ***
   !! toy_nemo :  MPI set-up, the ocean.output log, fatal errors, global
   !!             reductions and the namelist read check
   !!======================================================================
   !!   mpp_start     : MPI_Init, model communicator, open ocean.output (rank 0)
   !!   mpp_stop      : close ocean.output, MPI_Finalize
   !!   ctl_stop      : fatal error: ' E R R O R' to stderr + ocean.output, MPI_Abort
   !!   ctl_warn      : warning: ' W A R N I N G' to stderr + ocean.output (rank 0)
   !!   ctl_nam       : check the status of a namelist read, stop naming block and entry
   !!   nam_open      : open namelist_ref / namelist_cfg for reading
   !!   mpp_max       : global maximum of a real (exact, so decomposition independent)
   !!----------------------------------------------------------------------
   !! State owned here (written by mpp_start only):
   !!   mpi_comm_oce, nproc, jpnij, lwp, numout
   !!----------------------------------------------------------------------
   USE, INTRINSIC :: iso_fortran_env, ONLY : error_unit
   USE mpi_f08
   USE par_kind, ONLY : wp, lc

   IMPLICIT NONE
   PRIVATE

   PUBLIC   mpp_start   ! called by nemogcm
   PUBLIC   mpp_stop    ! called by nemogcm
   PUBLIC   ctl_stop    ! called by every module on a fatal error
   PUBLIC   ctl_warn    ! called by infmod (a restart that cannot continue exactly)
   PUBLIC   ctl_nam     ! called by every module that reads a namelist block
   PUBLIC   nam_open    ! called by every module that reads a namelist block
   PUBLIC   mpp_max     ! called by stpctl

   TYPE(MPI_Comm), PUBLIC ::   mpi_comm_oce       !: communicator of the ocean ranks
   INTEGER       , PUBLIC ::   nproc  = 0         !: this rank in mpi_comm_oce (0-based)
   INTEGER       , PUBLIC ::   jpnij  = 1         !: number of ocean ranks
   LOGICAL       , PUBLIC ::   lwp    = .FALSE.   !: .true. on the rank that writes ocean.output (0)
   INTEGER       , PUBLIC ::   numout = -1        !: unit of ocean.output (rank 0 only, once opened)

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE mpp_start( kcomm )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE mpp_start  ***
      !! ** Purpose :   start MPI (unless already started) and take a private
      !!                copy of the ocean communicator; open ocean.output on rank 0
      !!------------------------------------------------------------------
      TYPE(MPI_Comm), OPTIONAL, INTENT(in) ::   kcomm   ! communicator given by a coupler
      LOGICAL ::   llinit
      INTEGER ::   ios
      CHARACTER(len=lc) ::   cmsg
      !!------------------------------------------------------------------
      CALL MPI_Initialized( llinit )
      IF( .NOT. llinit )   CALL MPI_Init()
      IF( PRESENT(kcomm) ) THEN
         CALL MPI_Comm_dup( kcomm, mpi_comm_oce )
      ELSE
         CALL MPI_Comm_dup( MPI_COMM_WORLD, mpi_comm_oce )
      ENDIF
      CALL MPI_Comm_rank( mpi_comm_oce, nproc )
      CALL MPI_Comm_size( mpi_comm_oce, jpnij )
      lwp = nproc == 0
      IF( lwp ) THEN
         OPEN( NEWUNIT=numout, FILE='ocean.output', STATUS='replace', ACTION='write', IOSTAT=ios, IOMSG=cmsg )
         IF( ios /= 0 ) THEN
            CALL ctl_stop( 'lib_mpp: cannot open ocean.output: '//TRIM(cmsg) )
         ENDIF
         WRITE(numout,*)
         WRITE(numout,*) '                       toy_nemo: a NEMO-like ocean toy'
         WRITE(numout,*) '                       ================================'
         WRITE(numout,*)
         WRITE(numout,'(a,i6)') ' mpp_start: number of ocean ranks jpnij = ', jpnij
      ENDIF
   END SUBROUTINE mpp_start


   SUBROUTINE mpp_stop
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE mpp_stop  ***
      !! ** Purpose :   normal end of the run
      !!------------------------------------------------------------------
      IF( lwp ) THEN
         WRITE(numout,*)
         WRITE(numout,*) ' toy_nemo: normal end of the run'
         CLOSE( numout )
      ENDIF
      CALL MPI_Comm_free( mpi_comm_oce )
      CALL MPI_Finalize()
   END SUBROUTINE mpp_stop


   SUBROUTINE ctl_stop( cdmsg, ld_all )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE ctl_stop  ***
      !! ** Purpose :   stop the whole job on a fatal error
      !!
      !! ** Method  :   the message goes to stderr (and ocean.output on rank 0),
      !!                starting with ' E R R O R', then MPI_Abort(comm, 1).
      !!                ld_all = .true. when every rank finds the same error
      !!                (namelist checks): only rank 0 reports it, the others wait
      !!                in a barrier that rank 0's abort ends.
      !!------------------------------------------------------------------
      CHARACTER(len=*) , INTENT(in) ::   cdmsg    ! what went wrong, naming block/entry/file
      LOGICAL, OPTIONAL, INTENT(in) ::   ld_all   ! .true.: same error on every rank
      LOGICAL ::   llall, llopen
      CHARACTER(len=16) ::   clrank
      !!------------------------------------------------------------------
      llall = .FALSE.
      IF( PRESENT(ld_all) )   llall = ld_all
      IF( llall .AND. nproc /= 0 ) THEN
         CALL MPI_Barrier( mpi_comm_oce )
         CALL MPI_Abort( mpi_comm_oce, 1 )
      ENDIF
      clrank = ''
      IF( .NOT. llall .AND. jpnij > 1 )   WRITE(clrank,'(a,i0,a)') ' (rank ', nproc, ')'
      WRITE(error_unit,'(a)') ' E R R O R'//TRIM(clrank)//' : '//TRIM(cdmsg)
      FLUSH(error_unit)
      llopen = .FALSE.
      IF( lwp )   INQUIRE( UNIT=numout, OPENED=llopen )
      IF( llopen ) THEN
         WRITE(numout,'(a)') ' E R R O R'//TRIM(clrank)//' : '//TRIM(cdmsg)
         FLUSH(numout)
      ENDIF
      CALL MPI_Abort( mpi_comm_oce, 1 )
      STOP 1   ! not reached
   END SUBROUTINE ctl_stop


   SUBROUTINE ctl_warn( cdmsg )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE ctl_warn  ***
      !! ** Purpose :   say loudly that the run goes on in a way the user may not
      !!                expect: rank 0 writes ' W A R N I N G : ' and the message to
      !!                stderr and ocean.output (every rank may call it; not collective)
      !!------------------------------------------------------------------
      CHARACTER(len=*), INTENT(in) ::   cdmsg   ! what, and how to avoid it
      !!------------------------------------------------------------------
      IF( .NOT. lwp )   RETURN
      WRITE(error_unit,'(a)') ' W A R N I N G : '//TRIM(cdmsg)
      FLUSH(error_unit)
      WRITE(numout,'(a)') ' W A R N I N G : '//TRIM(cdmsg)
      FLUSH(numout)
   END SUBROUTINE ctl_warn


   SUBROUTINE nam_open( cdfile, knum )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE nam_open  ***
      !! ** Purpose :   open a namelist file for reading, stop if it is missing
      !!------------------------------------------------------------------
      CHARACTER(len=*), INTENT(in ) ::   cdfile   ! namelist_ref or namelist_cfg
      INTEGER         , INTENT(out) ::   knum     ! unit opened
      INTEGER ::   ios
      CHARACTER(len=lc) ::   cmsg
      !!------------------------------------------------------------------
      OPEN( NEWUNIT=knum, FILE=cdfile, STATUS='old', ACTION='read', IOSTAT=ios, IOMSG=cmsg )
      IF( ios /= 0 )   CALL ctl_stop( 'cannot open '//TRIM(cdfile)//': '//TRIM(cmsg), ld_all=.TRUE. )
   END SUBROUTINE nam_open


   SUBROUTINE ctl_nam( kios, cdmsg, cdblock, cdfile, knum )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE ctl_nam  ***
      !! ** Purpose :   check the status of the read of one namelist block
      !!
      !! ** Method  :   the block must be in namelist_ref (full defaults); it may be
      !!                absent from namelist_cfg (end of file, kios < 0). Any other
      !!                error stops, quoting the iomsg of the read, which names the
      !!                bad entry (e.g. 'Cannot match namelist object name rn_dtt').
      !!------------------------------------------------------------------
      INTEGER         , INTENT(in) ::   kios      ! iostat of the read
      CHARACTER(len=*), INTENT(in) ::   cdmsg     ! iomsg of the read
      CHARACTER(len=*), INTENT(in) ::   cdblock   ! block name, e.g. 'namrun'
      CHARACTER(len=*), INTENT(in) ::   cdfile    ! namelist_ref or namelist_cfg
      INTEGER         , INTENT(in) ::   knum      ! unit, closed here
      !!------------------------------------------------------------------
      CLOSE( knum )
      IF( kios == 0 )   RETURN
      IF( kios < 0 ) THEN
         IF( cdfile == 'namelist_cfg' )   RETURN   ! block not overridden
         CALL ctl_stop( 'namelist block &'//TRIM(cdblock)//' not found in '//TRIM(cdfile), ld_all=.TRUE. )
      ENDIF
      CALL ctl_stop( 'misspelled or wrong entry in namelist block &'//TRIM(cdblock)//' of '   &
         &           //TRIM(cdfile)//': '//TRIM(cdmsg), ld_all=.TRUE. )
   END SUBROUTINE ctl_nam


   FUNCTION mpp_max( pval ) RESULT( pmax )
      !!------------------------------------------------------------------
      !!                  ***  FUNCTION mpp_max  ***
      !! ** Purpose :   maximum of pval over all ocean ranks (exact in any order)
      !!------------------------------------------------------------------
      REAL(wp), INTENT(in) ::   pval
      REAL(wp) ::   pmax
      !!------------------------------------------------------------------
      CALL MPI_Allreduce( pval, pmax, 1, MPI_DOUBLE_PRECISION, MPI_MAX, mpi_comm_oce )
   END FUNCTION mpp_max

   !!======================================================================
END MODULE lib_mpp
