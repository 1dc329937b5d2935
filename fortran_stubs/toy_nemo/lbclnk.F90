MODULE lbclnk
   !!======================================================================
   !!                       ***  MODULE  lbclnk  ***
   !! toy_nemo :  the one halo exchange: fill the 1-point halo of 3D arrays
   !!             from the neighbouring ranks, land (zero) beyond the grid
   !!======================================================================
   !!   lbc_init : allocate the exchange buffers once
   !!   lbc_lnk  : exchange the halo of 1 to 3 arrays in one message per direction
   !!----------------------------------------------------------------------
   !! Method: east-west first (owned columns 2 and jpi-1), then north-south
   !! of whole rows 1..jpi, which carries the corners. Only copies values,
   !! so results do not depend on the decomposition.
   !!----------------------------------------------------------------------
   USE mpi_f08
   USE par_kind, ONLY : wp
   USE lib_mpp , ONLY : mpi_comm_oce, ctl_stop
   USE mppini  , ONLY : jpi, jpj, nowe, noea, noso, nono

   IMPLICIT NONE
   PRIVATE

   PUBLIC   lbc_init   ! called by nemogcm
   PUBLIC   lbc_lnk    ! called by step, dyn, rst

   INTEGER, PARAMETER ::   jpfld = 3          ! most arrays exchanged at once
   INTEGER ::   nlev = 0                      ! levels the buffers were sized for
   REAL(wp), ALLOCATABLE, DIMENSION(:) ::   sbufw, sbufe, rbufw, rbufe   ! east-west buffers
   REAL(wp), ALLOCATABLE, DIMENSION(:) ::   sbufs, sbufn, rbufs, rbufn   ! north-south buffers

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE lbc_init( kpk )
      INTEGER, INTENT(in) ::   kpk   ! number of levels of the arrays to exchange
      nlev = kpk
      ALLOCATE( sbufw(jpj*kpk*jpfld), sbufe(jpj*kpk*jpfld), rbufw(jpj*kpk*jpfld), rbufe(jpj*kpk*jpfld) )
      ALLOCATE( sbufs(jpi*kpk*jpfld), sbufn(jpi*kpk*jpfld), rbufs(jpi*kpk*jpfld), rbufn(jpi*kpk*jpfld) )
   END SUBROUTINE lbc_init


   SUBROUTINE lbc_lnk( pt1, pt2, pt3 )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE lbc_lnk  ***
      !! ** Purpose :   fill the halo of pt1 (and pt2, pt3) of shape (jpi, jpj, nlev)
      !!------------------------------------------------------------------
      REAL(wp), DIMENSION(:,:,:), TARGET,           INTENT(inout) ::   pt1
      REAL(wp), DIMENSION(:,:,:), TARGET, OPTIONAL, INTENT(inout) ::   pt2, pt3
      INTEGER ::   ifld, nfld, jk, jj, ji, ioff, ilen
      TYPE(MPI_Status) ::   istat
      REAL(wp), DIMENSION(:,:,:), POINTER ::   zt
      !!------------------------------------------------------------------
      IF( SIZE(pt1,1) /= jpi .OR. SIZE(pt1,2) /= jpj .OR. SIZE(pt1,3) > nlev )   &
         &   CALL ctl_stop( 'lbc_lnk: array shape does not match the local domain' )
      nfld = 1
      IF( PRESENT(pt2) )   nfld = 2
      IF( PRESENT(pt3) )   nfld = 3

      ! --- east-west --- !
      IF( nowe == MPI_PROC_NULL .AND. noea == MPI_PROC_NULL ) THEN
         DO ifld = 1, nfld
            CALL field( ifld, zt )
            zt(1  ,:,:) = 0._wp
            zt(jpi,:,:) = 0._wp
         END DO
      ELSE
         ilen = jpj * SIZE(pt1,3)
         DO ifld = 1, nfld
            CALL field( ifld, zt )
            ioff = (ifld - 1) * ilen
            DO jk = 1, SIZE(pt1,3)
               DO jj = 1, jpj
                  sbufw(ioff + jj) = zt(2    ,jj,jk)
                  sbufe(ioff + jj) = zt(jpi-1,jj,jk)
               END DO
               ioff = ioff + jpj
            END DO
         END DO
         CALL MPI_Sendrecv( sbufw, ilen*nfld, MPI_DOUBLE_PRECISION, nowe, 1,   &
            &               rbufe, ilen*nfld, MPI_DOUBLE_PRECISION, noea, 1, mpi_comm_oce, istat )
         CALL MPI_Sendrecv( sbufe, ilen*nfld, MPI_DOUBLE_PRECISION, noea, 2,   &
            &               rbufw, ilen*nfld, MPI_DOUBLE_PRECISION, nowe, 2, mpi_comm_oce, istat )
         DO ifld = 1, nfld
            CALL field( ifld, zt )
            ioff = (ifld - 1) * ilen
            DO jk = 1, SIZE(pt1,3)
               DO jj = 1, jpj
                  IF( nowe /= MPI_PROC_NULL ) THEN   ;   zt(1  ,jj,jk) = rbufw(ioff + jj)
                  ELSE                               ;   zt(1  ,jj,jk) = 0._wp
                  ENDIF
                  IF( noea /= MPI_PROC_NULL ) THEN   ;   zt(jpi,jj,jk) = rbufe(ioff + jj)
                  ELSE                               ;   zt(jpi,jj,jk) = 0._wp
                  ENDIF
               END DO
               ioff = ioff + jpj
            END DO
         END DO
      ENDIF

      ! --- north-south (whole rows, so the corners come along) --- !
      IF( noso == MPI_PROC_NULL .AND. nono == MPI_PROC_NULL ) THEN
         DO ifld = 1, nfld
            CALL field( ifld, zt )
            zt(:,1  ,:) = 0._wp
            zt(:,jpj,:) = 0._wp
         END DO
      ELSE
         ilen = jpi * SIZE(pt1,3)
         DO ifld = 1, nfld
            CALL field( ifld, zt )
            ioff = (ifld - 1) * ilen
            DO jk = 1, SIZE(pt1,3)
               DO ji = 1, jpi
                  sbufs(ioff + ji) = zt(ji,2    ,jk)
                  sbufn(ioff + ji) = zt(ji,jpj-1,jk)
               END DO
               ioff = ioff + jpi
            END DO
         END DO
         CALL MPI_Sendrecv( sbufs, ilen*nfld, MPI_DOUBLE_PRECISION, noso, 3,   &
            &               rbufn, ilen*nfld, MPI_DOUBLE_PRECISION, nono, 3, mpi_comm_oce, istat )
         CALL MPI_Sendrecv( sbufn, ilen*nfld, MPI_DOUBLE_PRECISION, nono, 4,   &
            &               rbufs, ilen*nfld, MPI_DOUBLE_PRECISION, noso, 4, mpi_comm_oce, istat )
         DO ifld = 1, nfld
            CALL field( ifld, zt )
            ioff = (ifld - 1) * ilen
            DO jk = 1, SIZE(pt1,3)
               IF( noso /= MPI_PROC_NULL ) THEN
                  zt(:,1,jk) = rbufs(ioff+1:ioff+jpi)
               ELSE
                  zt(:,1,jk) = 0._wp
               ENDIF
               IF( nono /= MPI_PROC_NULL ) THEN
                  zt(:,jpj,jk) = rbufn(ioff+1:ioff+jpi)
               ELSE
                  zt(:,jpj,jk) = 0._wp
               ENDIF
               ioff = ioff + jpi
            END DO
         END DO
      ENDIF

   CONTAINS

      SUBROUTINE field( kfld, pt )
         INTEGER, INTENT(in) ::   kfld
         REAL(wp), DIMENSION(:,:,:), POINTER, INTENT(out) ::   pt
         SELECT CASE( kfld )
         CASE( 1 )      ;   pt => pt1
         CASE( 2 )      ;   pt => pt2
         CASE DEFAULT   ;   pt => pt3
         END SELECT
      END SUBROUTINE field

   END SUBROUTINE lbc_lnk

   !!======================================================================
END MODULE lbclnk
