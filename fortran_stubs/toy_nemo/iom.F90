MODULE iom
   !!======================================================================
   !!                         ***  MODULE  iom  ***
   !! toy_nemo :  the I/O helpers shared by diawri and rst: gathering a
   !!             distributed 3D field on rank 0, checking netCDF statuses
   !!======================================================================
   !!   iom_init   : allocate the gather buffers once
   !!   iom_gather : owned points of every rank -> global array on rank 0
   !!   iom_scatter: global array on rank 0 -> owned points of every rank
   !!   iom_check  : stop with the netCDF message if a call failed
   !!----------------------------------------------------------------------
   USE mpi_f08
   USE netcdf  , ONLY : nf90_noerr, nf90_strerror
   USE par_kind, ONLY : wp
   USE lib_mpp , ONLY : mpi_comm_oce, nproc, jpnij, ctl_stop
   USE mppini  , ONLY : jpi, jpj, jpiglo, jpjglo, mpp_box

   IMPLICIT NONE
   PRIVATE

   PUBLIC   iom_init     ! called by nemogcm
   PUBLIC   iom_gather   ! called by diawri, rst, diatend
   PUBLIC   iom_scatter  ! called by diatend
   PUBLIC   iom_check    ! called by diawri, rst, diatend

   INTEGER ::   nlev = 0                                   ! levels the buffers were sized for
   REAL(wp), ALLOCATABLE, DIMENSION(:) ::   sbuf, rbuf    ! send buffer, receive buffer (rank 0)
   INTEGER , ALLOCATABLE, DIMENSION(:) ::   icnt, idsp    ! Gatherv counts and displacements

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE iom_init( kpk )
      INTEGER, INTENT(in) ::   kpk   ! most levels gathered at once
      nlev = kpk
      ALLOCATE( sbuf((jpi-2)*(jpj-2)*kpk), icnt(jpnij), idsp(jpnij) )
      IF( nproc == 0 ) THEN
         ALLOCATE( rbuf(jpiglo*jpjglo*kpk) )
      ELSE
         ALLOCATE( rbuf(1) )
      ENDIF
   END SUBROUTINE iom_init


   SUBROUTINE iom_gather( kpk, ploc, pglo )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE iom_gather  ***
      !! ** Purpose :   pglo(jpiglo, jpjglo, kpk) on rank 0 from the owned points
      !!                of ploc(jpi, jpj, kpk) on every rank (pglo unused elsewhere)
      !!------------------------------------------------------------------
      INTEGER ,                               INTENT(in ) ::   kpk    ! number of levels
      REAL(wp), DIMENSION(jpi,jpj,kpk)      , INTENT(in ) ::   ploc   ! local field, halo included
      REAL(wp), DIMENSION(:,:,:)            , INTENT(out) ::   pglo   ! global field (rank 0)
      INTEGER ::   ji, jj, jk, jr, in, iimpp, ijmpp, iowi, iowj
      !!------------------------------------------------------------------
      IF( kpk > nlev )   CALL ctl_stop( 'iom_gather: more levels than the buffers hold' )
      in = 0
      DO jk = 1, kpk
         DO jj = 2, jpj-1
            DO ji = 2, jpi-1
               in = in + 1
               sbuf(in) = ploc(ji,jj,jk)
            END DO
         END DO
      END DO
      IF( nproc == 0 ) THEN
         in = 0
         DO jr = 1, jpnij
            CALL mpp_box( jr-1, iimpp, ijmpp, iowi, iowj )
            icnt(jr) = iowi * iowj * kpk
            idsp(jr) = in
            in = in + icnt(jr)
         END DO
      ENDIF
      CALL MPI_Gatherv( sbuf, (jpi-2)*(jpj-2)*kpk, MPI_DOUBLE_PRECISION,   &
         &              rbuf, icnt, idsp, MPI_DOUBLE_PRECISION, 0, mpi_comm_oce )
      IF( nproc == 0 ) THEN
         in = 0
         DO jr = 1, jpnij
            CALL mpp_box( jr-1, iimpp, ijmpp, iowi, iowj )
            DO jk = 1, kpk
               DO jj = ijmpp, ijmpp + iowj - 1
                  DO ji = iimpp, iimpp + iowi - 1
                     in = in + 1
                     pglo(ji,jj,jk) = rbuf(in)
                  END DO
               END DO
            END DO
         END DO
      ENDIF
   END SUBROUTINE iom_gather


   SUBROUTINE iom_scatter( kpk, pglo, ploc )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE iom_scatter  ***
      !! ** Purpose :   owned points of ploc(jpi, jpj, kpk) on every rank from
      !!                pglo(jpiglo, jpjglo, kpk) on rank 0 (pglo unused elsewhere);
      !!                the halo of ploc is not touched: the caller fills it (lbc_lnk)
      !!------------------------------------------------------------------
      INTEGER ,                               INTENT(in   ) ::   kpk    ! number of levels
      REAL(wp), DIMENSION(:,:,:)            , INTENT(in   ) ::   pglo   ! global field (rank 0)
      REAL(wp), DIMENSION(jpi,jpj,kpk)      , INTENT(inout) ::   ploc   ! local field, halo included
      INTEGER ::   ji, jj, jk, jr, in, iimpp, ijmpp, iowi, iowj
      !!------------------------------------------------------------------
      IF( kpk > nlev )   CALL ctl_stop( 'iom_scatter: more levels than the buffers hold' )
      IF( nproc == 0 ) THEN
         in = 0
         DO jr = 1, jpnij
            CALL mpp_box( jr-1, iimpp, ijmpp, iowi, iowj )
            icnt(jr) = iowi * iowj * kpk
            idsp(jr) = in
            DO jk = 1, kpk
               DO jj = ijmpp, ijmpp + iowj - 1
                  DO ji = iimpp, iimpp + iowi - 1
                     in = in + 1
                     rbuf(in) = pglo(ji,jj,jk)
                  END DO
               END DO
            END DO
         END DO
      ENDIF
      CALL MPI_Scatterv( rbuf, icnt, idsp, MPI_DOUBLE_PRECISION,   &
         &               sbuf, (jpi-2)*(jpj-2)*kpk, MPI_DOUBLE_PRECISION, 0, mpi_comm_oce )
      in = 0
      DO jk = 1, kpk
         DO jj = 2, jpj-1
            DO ji = 2, jpi-1
               in = in + 1
               ploc(ji,jj,jk) = sbuf(in)
            END DO
         END DO
      END DO
   END SUBROUTINE iom_scatter


   SUBROUTINE iom_check( kstatus, cdwhat, ld_all )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE iom_check  ***
      !! ** Purpose :   stop the run, naming the file and operation, if a netCDF call failed
      !!------------------------------------------------------------------
      INTEGER          , INTENT(in) ::   kstatus   ! status returned by nf90_*
      CHARACTER(len=*) , INTENT(in) ::   cdwhat    ! e.g. 'diawri: create TOY_grid.nc'
      LOGICAL, OPTIONAL, INTENT(in) ::   ld_all    ! same call on every rank
      IF( kstatus /= nf90_noerr )   CALL ctl_stop( TRIM(cdwhat)//': '//TRIM(nf90_strerror(kstatus)), ld_all )
   END SUBROUTINE iom_check

   !!======================================================================
END MODULE iom
