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
   !!
   !! North fold (jperio = 4: T-point pivot, 6: F-point pivot, NEMO's rule,
   !! lbc_nfd): east-west is cyclic; the halo row north of the last row P
   !! (0-based global rows, P = jpjglo - 1; columns i 0-based, period jpiglo)
   !! takes sign * the mirror point ((ci - i) mod jpiglo, cj - j) with
   !!    T pivot: ci = 0 (T, V), -1 (U, F);  cj = 2P (T, U), 2P - 1 (V, F)
   !!    F pivot: ci = -1 (T, V), -2 (U, F); cj = 2P + 1 (T, U), 2P (V, F)
   !! and sign -1 for U and V (vector components), +1 for T and F. Row P
   !! itself takes its mirror where that lies in row P - 1 (V, F, T pivot),
   !! or in row P further west (T, U with a T pivot; V, F with an F pivot),
   !! so that a field is symmetric across the fold after the exchange. The
   !! last three rows are gathered from their owners (one sum over all ranks:
   !! every point has a single owner, the other ranks add zeros).
   !!----------------------------------------------------------------------
   USE mpi_f08
   USE par_kind, ONLY : wp
   USE lib_mpp , ONLY : mpi_comm_oce, ctl_stop
   USE mppini  , ONLY : jpi, jpj, jpiglo, jpjglo, nimpp, njmpp, jperio, nowe, noea, noso, nono

   IMPLICIT NONE
   PRIVATE

   PUBLIC   lbc_init   ! called by nemogcm
   PUBLIC   lbc_lnk    ! called by step, dyn, rst

   INTEGER, PARAMETER ::   jpfld = 3          ! most arrays exchanged at once
   INTEGER ::   nlev = 0                      ! levels the buffers were sized for
   REAL(wp), ALLOCATABLE, DIMENSION(:) ::   sbufw, sbufe, rbufw, rbufe   ! east-west buffers
   REAL(wp), ALLOCATABLE, DIMENSION(:) ::   sbufs, sbufn, rbufs, rbufn   ! north-south buffers
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:) ::   zrows   ! north fold: the last 3 global rows

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE lbc_init( kpk )
      INTEGER, INTENT(in) ::   kpk   ! number of levels of the arrays to exchange
      nlev = kpk
      ALLOCATE( sbufw(jpj*kpk*jpfld), sbufe(jpj*kpk*jpfld), rbufw(jpj*kpk*jpfld), rbufe(jpj*kpk*jpfld) )
      ALLOCATE( sbufs(jpi*kpk*jpfld), sbufn(jpi*kpk*jpfld), rbufs(jpi*kpk*jpfld), rbufn(jpi*kpk*jpfld) )
      IF( jperio /= 0 )   ALLOCATE( zrows(jpiglo, 3, kpk) )
   END SUBROUTINE lbc_init


   SUBROUTINE lbc_lnk( pt1, pt2, pt3, cd_nat )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE lbc_lnk  ***
      !! ** Purpose :   fill the halo of pt1 (and pt2, pt3) of shape (jpi, jpj, nlev)
      !!                cd_nat: the grid point of each array, one letter each
      !!                (T, U, V, F; default 'UVT': the toy's u, v, h), used by the
      !!                north fold only
      !!------------------------------------------------------------------
      REAL(wp), DIMENSION(:,:,:), TARGET,           INTENT(inout) ::   pt1
      REAL(wp), DIMENSION(:,:,:), TARGET, OPTIONAL, INTENT(inout) ::   pt2, pt3
      CHARACTER(len=*),                   OPTIONAL, INTENT(in   ) ::   cd_nat
      INTEGER ::   ifld, nfld, jk, jj, ji, ioff, ilen
      CHARACTER(len=3) ::   cnat
      TYPE(MPI_Status) ::   istat
      REAL(wp), DIMENSION(:,:,:), POINTER ::   zt
      !!------------------------------------------------------------------
      IF( SIZE(pt1,1) /= jpi .OR. SIZE(pt1,2) /= jpj .OR. SIZE(pt1,3) > nlev )   &
         &   CALL ctl_stop( 'lbc_lnk: array shape does not match the local domain' )
      nfld = 1
      IF( PRESENT(pt2) )   nfld = 2
      IF( PRESENT(pt3) )   nfld = 3
      cnat = 'UVT'
      IF( PRESENT(cd_nat) )   cnat = cd_nat

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

      ! --- north fold --- !
      IF( jperio == 4 .OR. jperio == 6 ) THEN
         DO ifld = 1, nfld
            CALL field( ifld, zt )
            CALL lbc_fold( zt, cnat(ifld:ifld) )
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


   SUBROUTINE lbc_fold( pt, cdnat )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE lbc_fold  ***
      !! ** Purpose :   the north-fold rows of pt (point cdnat), see the module header
      !!                (collective: every rank calls it)
      !!------------------------------------------------------------------
      REAL(wp), DIMENSION(:,:,:), INTENT(inout) ::   pt
      CHARACTER(len=1),           INTENT(in   ) ::   cdnat
      INTEGER  ::   ji, jj, jk, ikp, ip, ig, jg, ici, icj, ix, ixm, ijm, ierr
      REAL(wp) ::   zsgn
      !!------------------------------------------------------------------
      ikp = SIZE(pt, 3)
      ip  = jpjglo - 1                           ! last row, 0-based
      zrows(:,:,1:ikp) = 0._wp
      DO jj = 2, jpj-1
         jg = njmpp + jj - 3                     ! 0-based global row
         IF( jg < ip - 2 )   CYCLE
         DO jk = 1, ikp
            DO ji = 2, jpi-1
               zrows(nimpp + ji - 2, jg - ip + 3, jk) = pt(ji,jj,jk)
            END DO
         END DO
      END DO
      CALL MPI_Allreduce( MPI_IN_PLACE, zrows, jpiglo*3*ikp, MPI_DOUBLE_PRECISION, MPI_SUM,   &
         &                mpi_comm_oce, ierr )
      ici = 0   ;   icj = 2 * ip                 ! T pivot, T point
      IF( jperio == 6 ) THEN
         ici = -1   ;   icj = 2 * ip + 1         ! F pivot, T point
      ENDIF
      IF( cdnat == 'U' .OR. cdnat == 'F' )   ici = ici - 1
      IF( cdnat == 'V' .OR. cdnat == 'F' )   icj = icj - 1
      zsgn = 1._wp
      IF( cdnat == 'U' .OR. cdnat == 'V' )   zsgn = -1._wp
      DO jj = 1, jpj
         jg = njmpp + jj - 3
         IF( jg < ip )   CYCLE
         ijm = icj - jg                          ! mirror row, 0-based
         IF( ijm > ip )   CYCLE                  ! row P with an F pivot for T and U: not folded
         DO ji = 1, jpi
            ig  = nimpp + ji - 3
            ix  = MODULO( ig, jpiglo )
            ixm = MODULO( ici - ix, jpiglo )
            IF( jg == ip .AND. ijm == ip .AND. ixm >= ix ) THEN   ! row P, west half: kept
               pt(ji,jj,1:ikp) = zrows(ix+1, 3, 1:ikp)
            ELSE
               pt(ji,jj,1:ikp) = zsgn * zrows(ixm+1, ijm - ip + 3, 1:ikp)
            ENDIF
         END DO
      END DO
   END SUBROUTINE lbc_fold

   !!======================================================================
END MODULE lbclnk
