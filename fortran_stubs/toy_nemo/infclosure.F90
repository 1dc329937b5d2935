MODULE infclosure
   !!======================================================================
   !!                      ***  MODULE  infclosure  ***
   !! toy_nemo :  analytic closures computed inside the model, the reference
   !!             a coupled run is compared with (bit for bit)
   !!======================================================================
   !!   inc_laplacian : coefficient * 5-point Laplacian (halo 1)
   !!   inc_smooth3   : coefficient * (S3(x) - x), S a (1-2-1)x(1-2-1)/16 filter (halo 3)
   !!----------------------------------------------------------------------
   !! Same operations, in the same order of floating-point operations, as
   !! bridge/closures/analytic.py (laplacian_op, smooth_pass, smooth3_op), so
   !! that an in-process run and a coupled run give identical bits:
   !!   laplacian : c * ( ((x(i+1) + x(i-1)) + (x(j+1) + x(j-1))) - 4 x )
   !!   smooth    : r = (a(i-1) + a(i+1)) + 2 a(i) ;  S = ((r(j-1) + r(j+1)) + 2 r(j)) * 0.0625
   !!               (symmetric: a mirrored input gives the mirrored bits, across a north fold)
   !! smooth3 applies S three times, multiplying by tmask after each pass and
   !! filling the 1-point halo with lbc_lnk in between: the Python closure gets
   !! a halo of 3 and the same mask (1 ocean, 0 on land and beyond the grid).
   !! Values are computed on the points this rank owns (2..jpi-1, 2..jpj-1).
   !!----------------------------------------------------------------------
   USE par_kind, ONLY : wp
   USE mppini  , ONLY : jpi, jpj
   USE domain  , ONLY : tmask
   USE lbclnk  , ONLY : lbc_lnk

   IMPLICIT NONE
   PRIVATE

   PUBLIC   inc_laplacian   ! called by infmod
   PUBLIC   inc_smooth3     ! called by infmod

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE inc_laplacian( px, pcoef, pout )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inc_laplacian  ***
      !! ** Purpose :   pout = pcoef * Laplacian(px) on the owned points
      !!                (px's halo must be current)
      !!------------------------------------------------------------------
      REAL(wp), DIMENSION(:,:,:), INTENT(in   ) ::   px     ! (jpi, jpj, jpk), halo filled
      REAL(wp)                  , INTENT(in   ) ::   pcoef  ! coefficient
      REAL(wp), DIMENSION(:,:,:), INTENT(inout) ::   pout   ! (jpi, jpj, jpk), owned points written
      INTEGER ::   ji, jj, jk
      !!------------------------------------------------------------------
      DO jk = 1, SIZE(px, 3)
         DO jj = 2, jpj-1
            DO ji = 2, jpi-1
               pout(ji,jj,jk) = pcoef * (  ( ( px(ji+1,jj,jk) + px(ji-1,jj,jk) )           &
                  &                        + ( px(ji,jj+1,jk) + px(ji,jj-1,jk) ) )         &
                  &                      - 4._wp * px(ji,jj,jk)  )
            END DO
         END DO
      END DO
   END SUBROUTINE inc_laplacian


   SUBROUTINE inc_smooth3( px, pcoef, pout, pwa, pwb, cd_nat )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE inc_smooth3  ***
      !! ** Purpose :   pout = pcoef * (S3(px) - px) on the owned points
      !!                (px's halo must be current; pwa, pwb: work arrays of px's shape)
      !!------------------------------------------------------------------
      REAL(wp), DIMENSION(:,:,:), INTENT(in   ) ::   px         ! (jpi, jpj, jpk), halo filled
      REAL(wp)                  , INTENT(in   ) ::   pcoef      ! coefficient
      REAL(wp), DIMENSION(:,:,:), INTENT(inout) ::   pout       ! (jpi, jpj, jpk), owned points written
      REAL(wp), DIMENSION(:,:,:), INTENT(inout) ::   pwa, pwb   ! work arrays
      CHARACTER(len=1)          , INTENT(in   ) ::   cd_nat     ! grid point of px (north fold)
      INTEGER ::   ji, jj, jk
      !!------------------------------------------------------------------
      CALL smooth_pass( px , pwa )
      CALL lbc_lnk( pwa, cd_nat=cd_nat )
      CALL smooth_pass( pwa, pwb )
      CALL lbc_lnk( pwb, cd_nat=cd_nat )
      CALL smooth_pass( pwb, pwa )
      DO jk = 1, SIZE(px, 3)
         DO jj = 2, jpj-1
            DO ji = 2, jpi-1
               pout(ji,jj,jk) = pcoef * ( pwa(ji,jj,jk) - px(ji,jj,jk) )
            END DO
         END DO
      END DO
   END SUBROUTINE inc_smooth3


   SUBROUTINE smooth_pass( pa, pb )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE smooth_pass  ***
      !! ** Purpose :   pb = S(pa) * tmask on the owned points (halo of pb not set)
      !!------------------------------------------------------------------
      REAL(wp), DIMENSION(:,:,:), INTENT(in   ) ::   pa
      REAL(wp), DIMENSION(:,:,:), INTENT(inout) ::   pb
      INTEGER  ::   ji, jj, jk
      REAL(wp) ::   zrs, zrc, zrn   ! i-filtered values of rows j-1, j, j+1
      !!------------------------------------------------------------------
      DO jk = 1, SIZE(pa, 3)
         DO jj = 2, jpj-1
            DO ji = 2, jpi-1
               zrs = ( pa(ji-1,jj-1,jk) + pa(ji+1,jj-1,jk) ) + 2._wp * pa(ji,jj-1,jk)
               zrc = ( pa(ji-1,jj  ,jk) + pa(ji+1,jj  ,jk) ) + 2._wp * pa(ji,jj  ,jk)
               zrn = ( pa(ji-1,jj+1,jk) + pa(ji+1,jj+1,jk) ) + 2._wp * pa(ji,jj+1,jk)
               pb(ji,jj,jk) = ( ( ( zrs + zrn ) + 2._wp * zrc ) * 0.0625_wp ) * tmask(ji,jj)
            END DO
         END DO
      END DO
   END SUBROUTINE smooth_pass

   !!======================================================================
END MODULE infclosure
