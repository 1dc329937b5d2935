MODULE diawri
   !!======================================================================
   !!                       ***  MODULE  diawri  ***
   !! toy_nemo :  NetCDF output <cn_exp>_grid.nc: u, v, h of every layer and
   !!             the layer kinetic energy every nn_write steps, gathered on rank 0
   !!======================================================================
   !!   dia_wri_init  : create the file, write grid and masks (rank 0)
   !!   dia_wri       : append one record
   !!   dia_wri_final : close the file
   !!----------------------------------------------------------------------
   !! Layout (netCDF/C order): u, v, h (time_counter, z, y, x) with NEMO
   !! indices: u(i,j) is on the east face of T(i,j), v(i,j) on its north face;
   !! x_t/x_u and y_t/y_v give the positions [m] from the south-west wall.
   !! When a closure runs (coupled, or in process), the external tendencies
   !! used in the step, u_tend, v_tend, h_tend, are written too (diagnostics
   !! that tests compare between a coupled and an in-process run).
   !! With &namnudge ln_nudge, the nudging tendency averaged over the steps
   !! since the previous record is written too: nudge_u, nudge_v, nudge_h.
   !! The file is synced after every record: a run killed mid-way leaves a
   !! readable file.
   !!----------------------------------------------------------------------
   USE netcdf
   USE par_kind      , ONLY : wp, lc
   USE lib_mpp       , ONLY : lwp, numout
   USE mppini        , ONLY : jpi, jpj, jpiglo, jpjglo
   USE domain        , ONLY : rn_Dt
   USE oce           , ONLY : un, vn, hn, jpk, u_tend, v_tend, h_tend
   USE infmod        , ONLY : ln_mlb_tend_out
   USE nudging       , ONLY : ln_nudge, nud_mean
   USE iom           , ONLY : iom_gather, iom_check
   USE in_out_manager, ONLY : cn_exp
   USE usrdef_nam    , ONLY : rn_dx, rn_dy, rn_rho0, rn_gprime, rn_f0, rn_beta, rn_tau0, rn_ahm, rn_bhm, rn_rfr,   &
      &                       rn_aeiv

   IMPLICIT NONE
   PRIVATE

   PUBLIC   dia_wri_init    ! called by nemogcm
   PUBLIC   dia_wri         ! called by step
   PUBLIC   dia_wri_final   ! called by nemogcm

   CHARACTER(len=lc) ::   cfile                        ! <cn_exp>_grid.nc
   INTEGER ::   ncid = -1, nrec = 0                    ! file id, records written
   INTEGER ::   idt, idkt, idu, idv, idh, idke         ! variable ids
   INTEGER ::   idut, idvt, idht                       ! variable ids of the tendencies (ln_mlb_tend_out)
   INTEGER ::   idnu, idnv, idnh                       ! variable ids of the nudging tendencies (ln_nudge)
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:) ::   zug, zvg, zhg   ! global fields (rank 0)
   REAL(wp), ALLOCATABLE, DIMENSION(:)     ::   zke             ! layer kinetic energy (rank 0)
   REAL(wp), ALLOCATABLE, DIMENSION(:,:,:) ::   zwu, zwv, zwh   ! local nudging tendencies (ln_nudge)

   !!----------------------------------------------------------------------
CONTAINS

   SUBROUTINE dia_wri_init
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE dia_wri_init  ***
      !! ** Purpose :   create <cn_exp>_grid.nc with CF metadata, grid and masks
      !!------------------------------------------------------------------
      INTEGER ::   idx, idy, idz, idtim, ixt, ixu, iyt, iyv, iz, itm, ium, ivm, ji, jj, jk
      REAL(wp), DIMENSION(jpiglo,jpjglo) ::   ztm, zum, zvm
      !!------------------------------------------------------------------
      IF( lwp ) THEN
         ALLOCATE( zug(jpiglo,jpjglo,jpk), zvg(jpiglo,jpjglo,jpk), zhg(jpiglo,jpjglo,jpk), zke(jpk) )
      ELSE
         ALLOCATE( zug(1,1,1), zvg(1,1,1), zhg(1,1,1), zke(1) )
      ENDIF
      IF( ln_nudge )   ALLOCATE( zwu(jpi,jpj,jpk), zwv(jpi,jpj,jpk), zwh(jpi,jpj,jpk) )
      IF( .NOT. lwp )   RETURN
      cfile = TRIM(cn_exp)//'_grid.nc'
      CALL iom_check( nf90_create( cfile, IOR(NF90_CLOBBER, NF90_64BIT_OFFSET), ncid ), 'diawri: create '//TRIM(cfile) )
      CALL chk( nf90_def_dim( ncid, 'x', jpiglo, idx ) )
      CALL chk( nf90_def_dim( ncid, 'y', jpjglo, idy ) )
      CALL chk( nf90_def_dim( ncid, 'z', jpk, idz ) )
      CALL chk( nf90_def_dim( ncid, 'time_counter', NF90_UNLIMITED, idtim ) )

      CALL chk( nf90_def_var( ncid, 'x_t', NF90_DOUBLE, [idx], ixt ) )
      CALL att( ixt, 'long_name', 'x of T and V points from the western wall' )   ;   CALL att( ixt, 'units', 'm' )
      CALL chk( nf90_def_var( ncid, 'x_u', NF90_DOUBLE, [idx], ixu ) )
      CALL att( ixu, 'long_name', 'x of U and F points from the western wall' )   ;   CALL att( ixu, 'units', 'm' )
      CALL chk( nf90_def_var( ncid, 'y_t', NF90_DOUBLE, [idy], iyt ) )
      CALL att( iyt, 'long_name', 'y of T and U points from the southern wall' )  ;   CALL att( iyt, 'units', 'm' )
      CALL chk( nf90_def_var( ncid, 'y_v', NF90_DOUBLE, [idy], iyv ) )
      CALL att( iyv, 'long_name', 'y of V and F points from the southern wall' )  ;   CALL att( iyv, 'units', 'm' )
      CALL chk( nf90_def_var( ncid, 'z', NF90_INT, [idz], iz ) )
      CALL att( iz, 'long_name', 'isopycnal layer (1 at the top)' )               ;   CALL att( iz, 'positive', 'down' )
      CALL chk( nf90_def_var( ncid, 'time_counter', NF90_DOUBLE, [idtim], idt ) )
      CALL att( idt, 'standard_name', 'time' )   ;   CALL att( idt, 'axis', 'T' )
      CALL att( idt, 'units', 'seconds since 1900-01-01 00:00:00' )   ;   CALL att( idt, 'calendar', 'noleap' )
      CALL chk( nf90_def_var( ncid, 'kt', NF90_INT, [idtim], idkt ) )
      CALL att( idkt, 'long_name', 'model time step' )
      CALL chk( nf90_def_var( ncid, 'tmask', NF90_DOUBLE, [idx, idy], itm ) )
      CALL att( itm, 'long_name', 'land mask at T points (1 ocean)' )
      CALL chk( nf90_def_var( ncid, 'umask', NF90_DOUBLE, [idx, idy], ium ) )
      CALL att( ium, 'long_name', 'land mask at U points (1 ocean)' )
      CALL chk( nf90_def_var( ncid, 'vmask', NF90_DOUBLE, [idx, idy], ivm ) )
      CALL att( ivm, 'long_name', 'land mask at V points (1 ocean)' )

      CALL chk( nf90_def_var( ncid, 'u', NF90_DOUBLE, [idx, idy, idz, idtim], idu ) )
      CALL att( idu, 'standard_name', 'sea_water_x_velocity' )   ;   CALL att( idu, 'units', 'm s-1' )
      CALL att( idu, 'long_name', 'layer velocity in x at U points (east face of T cell)' )
      CALL att( idu, 'grid_point', 'U' )
      CALL chk( nf90_def_var( ncid, 'v', NF90_DOUBLE, [idx, idy, idz, idtim], idv ) )
      CALL att( idv, 'standard_name', 'sea_water_y_velocity' )   ;   CALL att( idv, 'units', 'm s-1' )
      CALL att( idv, 'long_name', 'layer velocity in y at V points (north face of T cell)' )
      CALL att( idv, 'grid_point', 'V' )
      CALL chk( nf90_def_var( ncid, 'h', NF90_DOUBLE, [idx, idy, idz, idtim], idh ) )
      CALL att( idh, 'standard_name', 'cell_thickness' )   ;   CALL att( idh, 'units', 'm' )
      CALL att( idh, 'long_name', 'isopycnal layer thickness at T points' )
      CALL att( idh, 'grid_point', 'T' )
      IF( ln_mlb_tend_out ) THEN
         CALL chk( nf90_def_var( ncid, 'u_tend', NF90_DOUBLE, [idx, idy, idz, idtim], idut ) )
         CALL att( idut, 'long_name', 'external (closure) tendency of u used in the step' )
         CALL att( idut, 'units', 'm s-2' )   ;   CALL att( idut, 'grid_point', 'U' )
         CALL chk( nf90_def_var( ncid, 'v_tend', NF90_DOUBLE, [idx, idy, idz, idtim], idvt ) )
         CALL att( idvt, 'long_name', 'external (closure) tendency of v used in the step' )
         CALL att( idvt, 'units', 'm s-2' )   ;   CALL att( idvt, 'grid_point', 'V' )
         CALL chk( nf90_def_var( ncid, 'h_tend', NF90_DOUBLE, [idx, idy, idz, idtim], idht ) )
         CALL att( idht, 'long_name', 'external (closure) tendency of h used in the step' )
         CALL att( idht, 'units', 'm s-1' )   ;   CALL att( idht, 'grid_point', 'T' )
      ENDIF
      IF( ln_nudge ) THEN
         CALL chk( nf90_def_var( ncid, 'nudge_u', NF90_DOUBLE, [idx, idy, idz, idtim], idnu ) )
         CALL att( idnu, 'long_name', 'nudging tendency of u averaged since the previous record' )
         CALL att( idnu, 'units', 'm s-2' )   ;   CALL att( idnu, 'grid_point', 'U' )
         CALL chk( nf90_def_var( ncid, 'nudge_v', NF90_DOUBLE, [idx, idy, idz, idtim], idnv ) )
         CALL att( idnv, 'long_name', 'nudging tendency of v averaged since the previous record' )
         CALL att( idnv, 'units', 'm s-2' )   ;   CALL att( idnv, 'grid_point', 'V' )
         CALL chk( nf90_def_var( ncid, 'nudge_h', NF90_DOUBLE, [idx, idy, idz, idtim], idnh ) )
         CALL att( idnh, 'long_name', 'nudging tendency of h averaged since the previous record' )
         CALL att( idnh, 'units', 'm s-1' )   ;   CALL att( idnh, 'grid_point', 'T' )
      ENDIF
      CALL chk( nf90_def_var( ncid, 'ke', NF90_DOUBLE, [idz, idtim], idke ) )
      CALL att( idke, 'long_name', 'layer kinetic energy, rho0/2 integral of h(u2+v2) over the basin' )
      CALL att( idke, 'units', 'J' )

      CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'Conventions', 'CF-1.8' ) )
      CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'title', 'toy_nemo reduced-gravity double gyre: '//TRIM(cn_exp) ) )
      CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'grid', 'Arakawa C, NEMO indices, 1-point land rim' ) )
      CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'rn_Dt', rn_Dt ) )
      CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'rn_dx', rn_dx ) )
      CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'rn_dy', rn_dy ) )
      CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'rn_rho0', rn_rho0 ) )
      CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'rn_gprime', rn_gprime ) )
      CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'rn_f0', rn_f0 ) )
      CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'rn_beta', rn_beta ) )
      CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'rn_tau0', rn_tau0 ) )
      CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'rn_ahm', rn_ahm ) )
      CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'rn_bhm', rn_bhm ) )
      CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'rn_aeiv', rn_aeiv ) )
      CALL chk( nf90_put_att( ncid, NF90_GLOBAL, 'rn_rfr', rn_rfr ) )
      CALL chk( nf90_enddef( ncid ) )

      CALL chk( nf90_put_var( ncid, ixt, [( (REAL(ji, wp) - 1.5_wp) * rn_dx, ji = 1, jpiglo )] ) )
      CALL chk( nf90_put_var( ncid, ixu, [( (REAL(ji, wp) - 1.0_wp) * rn_dx, ji = 1, jpiglo )] ) )
      CALL chk( nf90_put_var( ncid, iyt, [( (REAL(jj, wp) - 1.5_wp) * rn_dy, jj = 1, jpjglo )] ) )
      CALL chk( nf90_put_var( ncid, iyv, [( (REAL(jj, wp) - 1.0_wp) * rn_dy, jj = 1, jpjglo )] ) )
      CALL chk( nf90_put_var( ncid, iz, [( jk, jk = 1, jpk )] ) )
      ztm(:,:) = 0._wp
      ztm(2:jpiglo-1,2:jpjglo-1) = 1._wp
      zum(:,:) = 0._wp   ;   zum(1:jpiglo-1,:) = ztm(1:jpiglo-1,:) * ztm(2:jpiglo,:)
      zvm(:,:) = 0._wp   ;   zvm(:,1:jpjglo-1) = ztm(:,1:jpjglo-1) * ztm(:,2:jpjglo)
      CALL chk( nf90_put_var( ncid, itm, ztm ) )
      CALL chk( nf90_put_var( ncid, ium, zum ) )
      CALL chk( nf90_put_var( ncid, ivm, zvm ) )
      CALL chk( nf90_sync( ncid ) )

      WRITE(numout,*)
      WRITE(numout,*) 'dia_wri_init : output file ', TRIM(cfile)
      WRITE(numout,*) '~~~~~~~~~~~~'
   END SUBROUTINE dia_wri_init


   SUBROUTINE dia_wri( kt )
      !!------------------------------------------------------------------
      !!                  ***  ROUTINE dia_wri  ***
      !! ** Purpose :   append the fields of step kt (collective: every rank calls it)
      !!------------------------------------------------------------------
      INTEGER, INTENT(in) ::   kt   ! time step just completed
      INTEGER  ::   ji, jj, jk
      REAL(wp) ::   zsum
      !!------------------------------------------------------------------
      CALL iom_gather( jpk, un, zug )
      CALL iom_gather( jpk, vn, zvg )
      CALL iom_gather( jpk, hn, zhg )
      IF( lwp ) THEN
         DO jk = 1, jpk   ! fixed summation order on the global grid: decomposition independent
            zsum = 0._wp
            DO jj = 2, jpjglo-1
               DO ji = 2, jpiglo-1
                  zsum = zsum + zhg(ji,jj,jk) * (  zug(ji-1,jj,jk)**2 + zug(ji,jj,jk)**2     &
                     &                           + zvg(ji,jj-1,jk)**2 + zvg(ji,jj,jk)**2  )
               END DO
            END DO
            zke(jk) = 0.25_wp * rn_rho0 * rn_dx * rn_dy * zsum
         END DO
         nrec = nrec + 1
         CALL chk( nf90_put_var( ncid, idt , [REAL(kt, wp) * rn_Dt], start=[nrec] ) )
         CALL chk( nf90_put_var( ncid, idkt, [kt], start=[nrec] ) )
         CALL chk( nf90_put_var( ncid, idu, zug, start=[1,1,1,nrec], count=[jpiglo,jpjglo,jpk,1] ) )
         CALL chk( nf90_put_var( ncid, idv, zvg, start=[1,1,1,nrec], count=[jpiglo,jpjglo,jpk,1] ) )
         CALL chk( nf90_put_var( ncid, idh, zhg, start=[1,1,1,nrec], count=[jpiglo,jpjglo,jpk,1] ) )
         CALL chk( nf90_put_var( ncid, idke, zke, start=[1,nrec], count=[jpk,1] ) )
      ENDIF
      IF( ln_mlb_tend_out ) THEN   ! the global buffers are free again
         CALL iom_gather( jpk, u_tend, zug )
         CALL iom_gather( jpk, v_tend, zvg )
         CALL iom_gather( jpk, h_tend, zhg )
         IF( lwp ) THEN
            CALL chk( nf90_put_var( ncid, idut, zug, start=[1,1,1,nrec], count=[jpiglo,jpjglo,jpk,1] ) )
            CALL chk( nf90_put_var( ncid, idvt, zvg, start=[1,1,1,nrec], count=[jpiglo,jpjglo,jpk,1] ) )
            CALL chk( nf90_put_var( ncid, idht, zhg, start=[1,1,1,nrec], count=[jpiglo,jpjglo,jpk,1] ) )
         ENDIF
      ENDIF
      IF( ln_nudge ) THEN
         CALL nud_mean( zwu, zwv, zwh )
         CALL iom_gather( jpk, zwu, zug )
         CALL iom_gather( jpk, zwv, zvg )
         CALL iom_gather( jpk, zwh, zhg )
         IF( lwp ) THEN
            CALL chk( nf90_put_var( ncid, idnu, zug, start=[1,1,1,nrec], count=[jpiglo,jpjglo,jpk,1] ) )
            CALL chk( nf90_put_var( ncid, idnv, zvg, start=[1,1,1,nrec], count=[jpiglo,jpjglo,jpk,1] ) )
            CALL chk( nf90_put_var( ncid, idnh, zhg, start=[1,1,1,nrec], count=[jpiglo,jpjglo,jpk,1] ) )
         ENDIF
      ENDIF
      IF( lwp )   CALL chk( nf90_sync( ncid ) )
   END SUBROUTINE dia_wri


   SUBROUTINE dia_wri_final
      IF( lwp .AND. ncid >= 0 ) THEN
         CALL chk( nf90_close( ncid ) )
         ncid = -1
      ENDIF
   END SUBROUTINE dia_wri_final


   SUBROUTINE chk( kstatus )
      INTEGER, INTENT(in) ::   kstatus
      CALL iom_check( kstatus, 'diawri: write '//TRIM(cfile) )
   END SUBROUTINE chk


   SUBROUTINE att( kvar, cdname, cdval )
      INTEGER         , INTENT(in) ::   kvar
      CHARACTER(len=*), INTENT(in) ::   cdname, cdval
      CALL chk( nf90_put_att( ncid, kvar, cdname, cdval ) )
   END SUBROUTINE att

   !!======================================================================
END MODULE diawri
